//! The packed request head (`packed-request-head`) read as a [`RequestHead`].
//!
//! The gateway copies a packed head into the plugin as one buffer instead of one allocation per
//! field, and the view borrows from that buffer: a request reaches the router without a single
//! copy or allocation inside the plugin (one `Vec` when it has headers).

use crate::wit::wasmgate::plugin::types::PackedRequestHead;
use crate::{RequestHead, RequestHeader};

/// Reads the fields of a packed head in the order the WIT documents. A buffer shorter than its
/// lengths say, or a field that is not UTF-8 (neither of which the gateway sends), gives empty
/// fields rather than a trap.
pub fn unpack(packed: &PackedRequestHead) -> RequestHead<'_> {
    // The text fields come first, back to back: one UTF-8 check covers them all, and each field
    // is then a slice of it (empty where a field does not start and end on a character, as a
    // field that is not UTF-8 on its own would be).
    let fields = [
        Some(packed.method),
        Some(packed.scheme),
        Some(packed.authority),
        Some(packed.path),
        packed.query,
        Some(packed.client_address),
        Some(packed.listener),
        packed.tls_sni,
    ];
    let fields_len = fields
        .iter()
        .flatten()
        .fold(0usize, |sum, &n| sum.saturating_add(n as usize));
    let mut text = Reader {
        bytes: &packed.text,
        at: 0,
        checked: packed
            .text
            .get(..fields_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default(),
    };
    let method = text.str(packed.method);
    let scheme = text.str(packed.scheme);
    let authority = text.str(packed.authority);
    let path = text.str(packed.path);
    let query = packed.query.map(|n| text.str(n));
    let client_address = text.str(packed.client_address);
    let listener = text.str(packed.listener);
    let tls_sni = packed.tls_sni.map(|n| text.str(n));
    let count = packed.header_count as usize;
    // Each header takes at least its two lengths: a count beyond that is not believed.
    let mut headers = Vec::with_capacity(count.min(packed.text.len() / 8));
    for _ in 0..count {
        let (Some(name_len), Some(value_len)) = (text.u32(), text.u32()) else {
            break;
        };
        let name = text.str(name_len);
        let value = text.bytes(value_len);
        headers.push(RequestHeader { name, value });
    }
    RequestHead {
        method,
        scheme,
        authority,
        path,
        query,
        headers,
        client_address,
        listener,
        websocket: packed.websocket,
        tls_sni,
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    /// The start of `bytes` known to be UTF-8.
    checked: &'a str,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, len: u32) -> &'a [u8] {
        let start = self.at.min(self.bytes.len());
        let end = start.saturating_add(len as usize).min(self.bytes.len());
        self.at = end;
        &self.bytes[start..end]
    }

    fn str(&mut self, len: u32) -> &'a str {
        let start = self.at;
        let bytes = self.bytes(len);
        if self.at <= self.checked.len() {
            return self.checked.get(start..self.at).unwrap_or_default();
        }
        std::str::from_utf8(bytes).unwrap_or_default()
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.bytes(4);
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packs with the gateway's own encoder.
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

    #[test]
    fn a_short_buffer_gives_empty_fields_not_a_trap() {
        let mut p = pack(&head());
        p.text.truncate(10);
        p.header_count = u32::MAX;
        let h = unpack(&p);
        assert_eq!(h.method, "GET");
        assert_eq!(h.scheme, "https");
        assert_eq!(h.authority, "ap");
        assert_eq!(h.path, "");
        assert!(h.headers.is_empty());
    }

    #[test]
    fn a_field_that_is_not_utf8_on_its_own_is_empty() {
        // "é" split between the method and the scheme: the fields together are UTF-8, each
        // alone is not.
        let h = RequestHead {
            method: "GETé",
            scheme: "http",
            ..head()
        };
        let mut p = pack(&h);
        p.method -= 1;
        p.scheme += 1;
        let got = unpack(&p);
        assert_eq!((got.method, got.scheme), ("", ""));
        assert_eq!(got.authority, h.authority);
        // Bytes that are not UTF-8 at all empty only their own field.
        let mut p = pack(&head());
        p.text[1] = 0xff;
        let got = unpack(&p);
        assert_eq!(got.method, "");
        assert_eq!((got.scheme, got.path), (head().scheme, head().path));
        assert_eq!(unpack(&pack(&head())).headers, head().headers);
    }
}
