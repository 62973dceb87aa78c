//! The packed request head (`packed-request-head`) read as a [`RequestHead`].
//!
//! The gateway copies a packed head into the plugin as one buffer instead of one allocation per
//! field, and the view borrows from that buffer: a request reaches the router without a single
//! copy or allocation inside the plugin (one `Vec` when it has headers).

use wasmgate_rules::packed::{self, Lengths};

use crate::wit::wasmgate::plugin::types::PackedRequestHead;
use crate::{RequestHead, RequestHeader};

/// Reads a packed head with the layout's one reader ([`wasmgate_rules::packed::unpack`]). A
/// buffer shorter than its lengths say, or a field that is not UTF-8 (neither of which the
/// gateway sends), gives empty fields rather than a trap.
pub fn unpack(packed: &PackedRequestHead) -> RequestHead<'_> {
    let lengths = Lengths {
        method: packed.method,
        scheme: packed.scheme,
        authority: packed.authority,
        path: packed.path,
        query: packed.query,
        client_address: packed.client_address,
        listener: packed.listener,
        tls_sni: packed.tls_sni,
        header_count: packed.header_count,
    };
    let (text, headers) = packed::unpack(&packed.text, &lengths);
    // One allocation: the reader's bound is the count the head gives, as far as the buffer holds.
    let mut list = Vec::with_capacity(headers.size_hint().1.unwrap_or(0));
    list.extend(headers.map(|(name, value)| RequestHeader { name, value }));
    RequestHead {
        method: text.method,
        scheme: text.scheme,
        authority: text.authority,
        path: text.path,
        query: text.query,
        headers: list,
        client_address: text.client_address,
        listener: text.listener,
        websocket: packed.websocket,
        tls_sni: text.tls_sni,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs with the gateway's encoder; the layout's edge cases (short buffers, fields that are
    /// not UTF-8) are tested beside it, in `wasmgate_rules::packed`.
    fn pack(head: &RequestHead<'_>) -> PackedRequestHead {
        let fields = wasmgate_rules::packed::HeadText {
            method: head.method,
            scheme: head.scheme,
            authority: head.authority,
            path: head.path,
            query: head.query,
            client_address: head.client_address,
            listener: head.listener,
            tls_sni: head.tls_sni,
        };
        let mut text = Vec::new();
        let headers = head.headers.iter().map(|h| (h.name, h.value));
        let lengths = wasmgate_rules::packed::pack(&fields, headers, &mut text);
        PackedRequestHead {
            text,
            method: lengths.method,
            scheme: lengths.scheme,
            authority: lengths.authority,
            path: lengths.path,
            query: lengths.query,
            client_address: lengths.client_address,
            listener: lengths.listener,
            tls_sni: lengths.tls_sni,
            header_count: lengths.header_count,
            websocket: head.websocket,
        }
    }

    fn head() -> RequestHead<'static> {
        RequestHead {
            method: "GET",
            scheme: "https",
            authority: "app.contoso.com",
            path: "/api/ünïcode%20/x",
            query: Some("a=1&b="),
            headers: vec![
                RequestHeader {
                    name: "cookie",
                    value: b"session=4f1c; theme=dark",
                },
                RequestHeader {
                    name: "x-binary",
                    value: &[0xff, 0x00, b'a'],
                },
                RequestHeader {
                    name: "x-empty",
                    value: b"",
                },
            ],
            client_address: "[2001:db8::1]:51234",
            listener: "https",
            websocket: true,
            tls_sni: Some("app.contoso.com"),
        }
    }

    #[test]
    fn a_packed_head_reads_back_as_the_same_head() {
        let h = head();
        assert_eq!(unpack(&pack(&h)), h);
        let bare = RequestHead {
            query: None,
            tls_sni: None,
            headers: Vec::new(),
            websocket: false,
            ..head()
        };
        assert_eq!(unpack(&pack(&bare)), bare);
        // An empty query is not an absent one.
        let empty_query = RequestHead {
            query: Some(""),
            ..bare
        };
        assert_eq!(unpack(&pack(&empty_query)), empty_query);
    }
}
