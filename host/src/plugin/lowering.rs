//! A request head lowered into a plugin straight from borrowed data.
//!
//! The generated [`RequestHead`] owns its strings, so building one for a request copies every
//! field and header into fresh allocations on the host, only for the canonical ABI to copy them
//! again into the guest's memory. [`RequestHeadRef`] has the same WIT shape
//! (`wasmgate:plugin/types.request-head`) over borrowed `&str` and `&[u8]`: the proxy builds it
//! from the hyper request without allocating a string, and the one copy made is into the guest.
//! The shape is checked against the component's `route` export when an instance is created.

use wasmtime::component::{ComponentType, Lower};

use super::{Header, RequestHead};

/// `wasmgate:plugin/types.header`, borrowed.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub struct HeaderRef<'a> {
    #[component(name = "name")]
    pub name: &'a str,
    #[component(name = "value")]
    pub value: &'a [u8],
}

/// `wasmgate:plugin/types.request-head`, borrowed.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub struct RequestHeadRef<'a> {
    #[component(name = "method")]
    pub method: &'a str,
    #[component(name = "scheme")]
    pub scheme: &'a str,
    #[component(name = "authority")]
    pub authority: &'a str,
    #[component(name = "path")]
    pub path: &'a str,
    #[component(name = "query")]
    pub query: Option<&'a str>,
    #[component(name = "headers")]
    pub headers: &'a [HeaderRef<'a>],
    #[component(name = "client-address")]
    pub client_address: &'a str,
    #[component(name = "listener")]
    pub listener: &'a str,
    #[component(name = "websocket")]
    pub websocket: bool,
    #[component(name = "tls-sni")]
    pub tls_sni: Option<&'a str>,
}

impl<'a> RequestHeadRef<'a> {
    /// Borrows `head`; `headers` holds the header references (a caller may reuse it).
    pub fn of(head: &'a RequestHead, headers: &'a mut Vec<HeaderRef<'a>>) -> Self {
        headers.clear();
        headers.extend(head.headers.iter().map(|h| HeaderRef {
            name: &h.name,
            value: &h.value,
        }));
        RequestHeadRef {
            method: &head.method,
            scheme: &head.scheme,
            authority: &head.authority,
            path: &head.path,
            query: head.query.as_deref(),
            headers,
            client_address: &head.client_address,
            listener: &head.listener,
            websocket: head.websocket,
            tls_sni: head.tls_sni.as_deref(),
        }
    }

    /// An owned copy (for a shadow candidate, which runs after the request moved on).
    pub fn to_owned_head(&self) -> RequestHead {
        RequestHead {
            method: self.method.to_owned(),
            scheme: self.scheme.to_owned(),
            authority: self.authority.to_owned(),
            path: self.path.to_owned(),
            query: self.query.map(str::to_owned),
            headers: self
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.to_owned(),
                    value: h.value.to_vec(),
                })
                .collect(),
            client_address: self.client_address.to_owned(),
            listener: self.listener.to_owned(),
            websocket: self.websocket,
            tls_sni: self.tls_sni.map(str::to_owned),
        }
    }
}

/// `wasmgate:plugin/types.packed-request-head`: a [`RequestHeadRef`] packed into one buffer,
/// for a component exporting `packed-router`. Each string of a record head costs a call into
/// the guest's allocator when it is lowered (eight or more per request); the packed head costs
/// one, for `text`.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub struct PackedHeadRef<'a> {
    #[component(name = "text")]
    pub text: &'a [u8],
    #[component(name = "method")]
    pub method: u32,
    #[component(name = "scheme")]
    pub scheme: u32,
    #[component(name = "authority")]
    pub authority: u32,
    #[component(name = "path")]
    pub path: u32,
    #[component(name = "query")]
    pub query: Option<u32>,
    #[component(name = "client-address")]
    pub client_address: u32,
    #[component(name = "listener")]
    pub listener: u32,
    #[component(name = "tls-sni")]
    pub tls_sni: Option<u32>,
    #[component(name = "header-count")]
    pub header_count: u32,
    #[component(name = "websocket")]
    pub websocket: bool,
}

/// A packed buffer larger than this is not kept for the next call.
const KEEP_PACKED: usize = 16 * 1024;

impl<'a> PackedHeadRef<'a> {
    /// Packs `head` into `text` (cleared first; its capacity is reused from call to call), in
    /// the layout the WIT documents ([`wasmgate_rules::packed`]).
    pub fn pack(head: &RequestHeadRef<'_>, text: &'a mut Vec<u8>) -> Self {
        if text.capacity() > KEEP_PACKED {
            *text = Vec::new();
        }
        text.clear();
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
        let headers = head.headers.iter().map(|h| (h.name, h.value));
        let lengths = wasmgate_rules::packed::pack(&fields, headers, text);
        PackedHeadRef {
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
}

/// Formats a socket address into `buf` without allocating (`[v6]:port` is at most 47 bytes).
pub fn format_addr(addr: std::net::SocketAddr, buf: &mut [u8; 64]) -> &str {
    use std::io::Write as _;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{addr}");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_format_like_display() {
        let mut buf = [0u8; 64];
        for a in [
            "198.51.100.23:51234",
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(format_addr(addr, &mut buf), a);
        }
    }
}
