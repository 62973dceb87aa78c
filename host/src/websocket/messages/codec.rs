//! RFC 6455 frames for the message relay: reading whole frames out of the bytes a peer sent,
//! writing frames (masked towards the backend, where the gateway is the client, §5.1), and
//! checking text messages' UTF-8 as their fragments arrive (§8.1).

/// Opcodes (RFC 6455 §5.2).
pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// A frame's header, once read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// RSV1–3 (§5.2): no extension is negotiated on a filtered session, so they must be 0.
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub mask: [u8; 4],
    /// The header's own length (2 to 14 bytes).
    pub header_len: usize,
    pub payload_len: u64,
}

impl Header {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }

    /// The whole frame's length, header included (saturating for absurd lengths).
    pub fn frame_len(&self) -> u64 {
        (self.header_len as u64).saturating_add(self.payload_len)
    }
}

/// Reads the header at the start of `bytes`; `None` while incomplete.
pub fn parse_header(bytes: &[u8]) -> Option<Header> {
    let [b0, b1, ..] = *bytes else { return None };
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut at) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mut mask = [0; 4];
    if masked {
        mask.copy_from_slice(bytes.get(at..at + 4)?);
        at += 4;
    }
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: (b0 >> 4) & 0x7,
        opcode: b0 & 0x0f,
        masked,
        mask,
        header_len: at,
        payload_len,
    })
}

/// XORs `data` with the masking key, starting at byte `offset` of the payload (§5.3).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Appends one final frame (FIN set) carrying `payload` to `out`; masked with a fresh key when
/// `masked` (frames towards the backend).
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], masked: bool) {
    write_frame_parts(out, opcode, &[payload], masked);
}

/// [`write_frame`] with the payload in pieces (a Close frame's code and reason).
pub fn write_frame_parts(out: &mut Vec<u8>, opcode: u8, parts: &[&[u8]], masked: bool) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(14 + len);
    out.push(0x80 | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let start = out.len();
    let key = masked.then(|| {
        // §5.3 asks for an unpredictable key so that script-chosen payloads cannot steer the
        // bytes on the wire towards a proxy in between.
        let key = fastrand::u32(..).to_ne_bytes();
        out.extend_from_slice(&key);
        key
    });
    let payload_start = out.len();
    for p in parts {
        out.extend_from_slice(p);
    }
    if let Some(key) = key {
        apply_mask(&mut out[payload_start..], key, 0);
    }
    debug_assert!(out.len() >= start);
}

/// A Close frame's payload read back: the code (none for an empty payload) and whether the
/// payload is well formed (§5.5.1: empty, or a code and UTF-8 reason).
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Checks UTF-8 as a text message's bytes arrive, so that an invalid sequence fails the
/// session when its fragment arrives rather than at the message's end (§8.1).
#[derive(Debug, Default, Clone, Copy)]
pub struct Utf8Check {
    /// Bytes known to be whole, valid characters.
    valid: usize,
}

impl Utf8Check {
    /// Looks at what `text` holds past what was checked. `Err` on an invalid sequence; a
    /// character cut at the end waits for the next fragment.
    pub fn feed(&mut self, text: &[u8]) -> Result<(), ()> {
        match std::str::from_utf8(&text[self.valid..]) {
            Ok(_) => {
                self.valid = text.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() => {
                self.valid += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(()),
        }
    }

    /// The bytes of a character cut at the end of what was checked (at most 3).
    pub fn pending<'a>(&self, text: &'a [u8]) -> &'a [u8] {
        &text[self.valid..]
    }

    /// Whether the message, now complete, ends on a whole character.
    pub fn complete(&self, text: &[u8]) -> bool {
        self.valid == text.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_written_are_read_back() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            for masked in [false, true] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut out = Vec::new();
                write_frame(&mut out, BINARY, &payload, masked);
                let h = parse_header(&out).unwrap();
                assert_eq!(
                    (h.fin, h.opcode, h.masked, h.rsv),
                    (true, BINARY, masked, 0)
                );
                assert_eq!(h.payload_len, len as u64);
                assert_eq!(h.frame_len(), out.len() as u64);
                let mut body = out[h.header_len..].to_vec();
                if masked {
                    apply_mask(&mut body, h.mask, 0);
                }
                assert_eq!(body, payload);
            }
        }
        assert_eq!(parse_header(&[0x81]), None);
        assert_eq!(parse_header(&[0x81, 0xfe, 0]), None);
    }

    #[test]
    fn masking_from_any_offset_matches_bytewise() {
        let mask = [1, 2, 3, 4];
        let data: Vec<u8> = (0..37).collect();
        for offset in 0..4 {
            let mut fast = data.clone();
            apply_mask(&mut fast, mask, offset);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(offset + i) % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn utf8_is_checked_across_fragments() {
        let text = "héllo €".as_bytes();
        let mut check = Utf8Check::default();
        // Cut in the middle of "€" (3 bytes).
        let cut = text.len() - 2;
        assert!(check.feed(&text[..cut]).is_ok());
        assert!(!check.complete(&text[..cut]));
        assert!(check.feed(text).is_ok());
        assert!(check.complete(text));
        let mut bad = Utf8Check::default();
        assert!(bad.feed(&[b'a', 0xff, b'b']).is_err());
        let mut bad = Utf8Check::default();
        assert!(bad.feed(&[0xed, 0xa0, 0x80]).is_err(), "a surrogate half");
    }
}
