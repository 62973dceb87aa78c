//! The layout of the WIT `packed-request-head`, written and read in this one place: the gateway
//! packs each request head it hands to a `packed-router` with [`pack`], and the SDK reads it
//! inside the plugin with [`unpack`].
//!
//! The text holds, back to back: the method, the scheme, the authority, the path, the query
//! (when there is one), the client address, the listener's name and the TLS SNI (when there is
//! one); then per header the name's length and the value's length (two u32, little-endian)
//! followed by the name and the value. The record beside it carries each field's length.

/// The text fields of a request head, in the order they are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Reads `text` packed as `lengths` say, without copying: the text fields, and the headers as
/// they are read. A buffer shorter than its lengths say, or a field that is not UTF-8 (neither of
/// which the gateway sends), gives empty fields rather than a panic.
pub fn unpack<'a>(text: &'a [u8], lengths: &Lengths) -> (HeadText<'a>, Headers<'a>) {
    // The text fields come first, back to back: one UTF-8 check covers them all, and each field
    // is then a slice of it (empty where a field does not start and end on a character, as a
    // field that is not UTF-8 on its own would be).
    let fields = [
        Some(lengths.method),
        Some(lengths.scheme),
        Some(lengths.authority),
        Some(lengths.path),
        lengths.query,
        Some(lengths.client_address),
        Some(lengths.listener),
        lengths.tls_sni,
    ];
    let fields_len = fields
        .iter()
        .flatten()
        .fold(0usize, |sum, &n| sum.saturating_add(n as usize));
    let mut reader = Reader {
        bytes: text,
        at: 0,
        checked: text
            .get(..fields_len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default(),
    };
    let head = HeadText {
        method: reader.str(lengths.method),
        scheme: reader.str(lengths.scheme),
        authority: reader.str(lengths.authority),
        path: reader.str(lengths.path),
        query: lengths.query.map(|n| reader.str(n)),
        client_address: reader.str(lengths.client_address),
        listener: reader.str(lengths.listener),
        tls_sni: lengths.tls_sni.map(|n| reader.str(n)),
    };
    let headers = Headers {
        reader,
        left: lengths.header_count,
    };
    (head, headers)
}

/// The headers of a packed head, (name, value), read one by one.
#[derive(Debug, Clone)]
pub struct Headers<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let (Some(name_len), Some(value_len)) = (self.reader.u32(), self.reader.u32()) else {
            self.left = 0;
            return None;
        };
        self.left -= 1;
        let name = self.reader.str(name_len);
        let value = self.reader.bytes(value_len);
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // Each header takes at least its two lengths: a count beyond that is not believed.
        let room = self.reader.bytes.len().saturating_sub(self.reader.at) / 8;
        (0, Some((self.left as usize).min(room)))
    }
}

#[derive(Debug, Clone)]
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

    type Header = (&'static str, &'static [u8]);

    const HEADERS: &[Header] = &[
        ("cookie", b"session=4f1c; theme=dark"),
        ("x-binary", &[0xff, 0x00, b'a']),
        ("x-empty", b""),
    ];

    fn head() -> HeadText<'static> {
        HeadText {
            method: "GET",
            scheme: "https",
            authority: "app.contoso.com",
            path: "/api/\u{fc}n\u{ef}code%20/x",
            query: Some("a=1&b="),
            client_address: "[2001:db8::1]:51234",
            listener: "https",
            tls_sni: Some("app.contoso.com"),
        }
    }

    fn pack_all(head: &HeadText<'_>, headers: &[Header]) -> (Vec<u8>, Lengths) {
        let mut text = Vec::new();
        let lengths = pack(head, headers.iter().copied(), &mut text);
        (text, lengths)
    }

    fn read_back<'a>(
        text: &'a [u8],
        lengths: &Lengths,
    ) -> (HeadText<'a>, Vec<(&'a str, &'a [u8])>) {
        let (head, headers) = unpack(text, lengths);
        (head, headers.collect())
    }

    #[test]
    fn a_packed_head_reads_back_as_the_same_head() {
        let (text, lengths) = pack_all(&head(), HEADERS);
        assert_eq!(read_back(&text, &lengths), (head(), HEADERS.to_vec()));
        let bare = HeadText {
            query: None,
            tls_sni: None,
            ..head()
        };
        let (text, lengths) = pack_all(&bare, &[]);
        assert_eq!(read_back(&text, &lengths), (bare, Vec::new()));
        // An empty query is not an absent one.
        let empty_query = HeadText {
            query: Some(""),
            ..bare
        };
        let (text, lengths) = pack_all(&empty_query, &[]);
        assert_eq!(read_back(&text, &lengths).0, empty_query);
    }

    #[test]
    fn a_short_buffer_gives_empty_fields_not_a_panic() {
        let (mut text, mut lengths) = pack_all(&head(), HEADERS);
        text.truncate(10);
        lengths.header_count = u32::MAX;
        let (h, headers) = unpack(&text, &lengths);
        assert_eq!(headers.size_hint(), (0, Some(0)));
        assert_eq!(h.method, "GET");
        assert_eq!(h.scheme, "https");
        assert_eq!(h.authority, "ap");
        assert_eq!(h.path, "");
        assert_eq!(headers.count(), 0);
    }

    #[test]
    fn a_field_that_is_not_utf8_on_its_own_is_empty() {
        // "é" split between the method and the scheme: the fields together are UTF-8, each
        // alone is not.
        let h = HeadText {
            method: "GET\u{e9}",
            scheme: "http",
            ..head()
        };
        let (text, mut lengths) = pack_all(&h, HEADERS);
        lengths.method -= 1;
        lengths.scheme += 1;
        let (got, _) = unpack(&text, &lengths);
        assert_eq!((got.method, got.scheme), ("", ""));
        assert_eq!(got.authority, h.authority);
        // Bytes that are not UTF-8 at all empty only their own field.
        let (mut text, lengths) = pack_all(&head(), HEADERS);
        text[1] = 0xff;
        let (got, headers) = read_back(&text, &lengths);
        assert_eq!(got.method, "");
        assert_eq!((got.scheme, got.path), (head().scheme, head().path));
        assert_eq!(headers, HEADERS.to_vec());
    }
}
