//! The layout of the WIT `packed-request-head`: one encoder for the gateway, which packs each
//! request head it hands to a `packed-router`, and for the SDK's tests of the reader on the
//! plugin's side.
//!
//! The text holds, back to back: the method, the scheme, the authority, the path, the query
//! (when there is one), the client address, the listener's name and the TLS SNI (when there is
//! one); then per header the name's length and the value's length (two u32, little-endian)
//! followed by the name and the value. The record beside it carries each field's length.

/// The text fields of a request head, in the order they are packed.
#[derive(Debug, Clone, Copy)]
pub struct HeadText<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub client_address: &'a str,
    pub listener: &'a str,
    pub tls_sni: Option<&'a str>,
}

/// Each field's length in the packed text, as the WIT record carries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lengths {
    pub method: u32,
    pub scheme: u32,
    pub authority: u32,
    pub path: u32,
    pub query: Option<u32>,
    pub client_address: u32,
    pub listener: u32,
    pub tls_sni: Option<u32>,
    pub header_count: u32,
}

/// Appends `head` and `headers` (name, value) to `text` in the packed layout. Lengths fit in
/// u32: a request head is bounded by the listener's header limits, far below 4 GiB.
pub fn pack<'h>(
    head: &HeadText<'_>,
    headers: impl ExactSizeIterator<Item = (&'h str, &'h [u8])>,
    text: &mut Vec<u8>,
) -> Lengths {
    let header_count = headers.len() as u32;
    let mut put = |s: &str| {
        text.extend_from_slice(s.as_bytes());
        s.len() as u32
    };
    let method = put(head.method);
    let scheme = put(head.scheme);
    let authority = put(head.authority);
    let path = put(head.path);
    let query = head.query.map(&mut put);
    let client_address = put(head.client_address);
    let listener = put(head.listener);
    let tls_sni = head.tls_sni.map(&mut put);
    for (name, value) in headers {
        text.extend_from_slice(&(name.len() as u32).to_le_bytes());
        text.extend_from_slice(&(value.len() as u32).to_le_bytes());
        text.extend_from_slice(name.as_bytes());
        text.extend_from_slice(value);
    }
    Lengths {
        method,
        scheme,
        authority,
        path,
        query,
        client_address,
        listener,
        tls_sni,
        header_count,
    }
}
