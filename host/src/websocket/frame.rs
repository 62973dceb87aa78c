//! RFC 6455 §5.2 frame-boundary tracking for the WebSocket relay.
//!
//! The relay forwards raw bytes and never re-buffers messages, but to end a
//! session cleanly it must know where frames begin and end: a Close frame
//! can only be injected between two frames (§5.2, §5.4), and the gateway
//! must know whether a peer already sent its own Close (§5.5.1) so that it
//! does not send a second one. `FrameTracker` follows the frame headers of
//! one direction incrementally, skipping payloads in O(1) per chunk.

/// Opcode of a Close control frame (RFC 6455 §5.5.1).
pub const OPCODE_CLOSE: u8 = 0x8;

/// Status code 1001 "Going Away" (RFC 6455 §7.4.1): the gateway is ending the
/// session because of a timeout or because it is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Where the tracker is inside the current frame (RFC 6455 §5.2 layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Expecting the FIN/RSV/opcode byte: this is a frame boundary.
    Opcode,
    /// Expecting the MASK bit + 7-bit payload length byte.
    Length,
    /// Reading the 16- or 64-bit extended payload length (network order).
    ExtendedLength,
    /// Reading the 4-byte masking key.
    MaskingKey,
    /// Inside the payload.
    Payload,
}

/// Follows RFC 6455 frame boundaries in one direction of a WebSocket stream.
///
/// Feed it every chunk forwarded in that direction, in order. It keeps a few
/// dozen bytes of state and allocates nothing; payload bytes are skipped in
/// bulk, only header bytes (at most 14 per frame) are looked at one by one.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    stage: Stage,
    /// Opcode of the frame in progress.
    opcode: u8,
    masked: bool,
    /// Extended-length or masking-key bytes still expected.
    header_left: u8,
    /// While in `ExtendedLength`: the length accumulated so far; while in
    /// `Payload`: the payload bytes still to come.
    len: u64,
    /// Masking key of the frame in progress (all zero when unmasked), kept
    /// only to read the status code of a masked Close frame.
    key: [u8; 4],
    /// Payload bytes of the current Close frame captured so far (0..=2).
    code_len: u8,
    code: [u8; 2],
    close_seen: bool,
    close_code: Option<u16>,
    /// Data frames with FIN set seen so far: whole messages (§5.4).
    messages: u64,
}

impl Default for FrameTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameTracker {
    /// A tracker positioned at the start of a stream (a frame boundary).
    pub const fn new() -> Self {
        Self {
            stage: Stage::Opcode,
            opcode: 0,
            masked: false,
            header_left: 0,
            len: 0,
            key: [0; 4],
            code_len: 0,
            code: [0; 2],
            close_seen: false,
            close_code: None,
            messages: 0,
        }
    }

    /// True when no partial frame is pending: the bytes fed so far end exactly
    /// at a frame boundary, so a new frame may be inserted here.
    pub fn at_boundary(&self) -> bool {
        self.stage == Stage::Opcode
    }

    /// True once a Close frame has been seen completely in this direction.
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Status code of the first Close frame seen, if it carried one
    /// (RFC 6455 §5.5.1: the body, when present, starts with a 2-byte code).
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// Whole messages seen: data frames with FIN set, fragmented or not.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Follows every byte of `bytes`.
    pub fn advance(&mut self, bytes: &[u8]) {
        let consumed = self.step(bytes, false);
        debug_assert_eq!(consumed, bytes.len());
    }

    /// Follows `bytes` only up to the end of the frame currently in flight
    /// and returns how many bytes that took. Returns 0 when already at a
    /// boundary; when the result is less than `bytes.len()` the tracker is at
    /// a boundary and `bytes[result..]` belongs to the following frames.
    pub fn advance_to_boundary(&mut self, bytes: &[u8]) -> usize {
        if self.at_boundary() {
            return 0;
        }
        self.step(bytes, true)
    }

    fn step(&mut self, bytes: &[u8], stop_at_boundary: bool) -> usize {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.stage {
                Stage::Opcode => {
                    // FIN and RSV bits do not affect framing; fragments and
                    // interleaved control frames are all just frames (§5.4).
                    self.opcode = b & 0x0F;
                    // FIN on a data or continuation frame (opcodes 0–7) ends a message.
                    self.messages += u64::from(b & 0x88 == 0x80);
                    self.stage = Stage::Length;
                    i += 1;
                }
                Stage::Length => {
                    self.masked = b & 0x80 != 0;
                    i += 1;
                    match b & 0x7F {
                        126 => self.expect_extended_length(2),
                        127 => self.expect_extended_length(8),
                        short => {
                            self.len = u64::from(short);
                            self.after_length();
                        }
                    }
                }
                Stage::ExtendedLength => {
                    self.len = (self.len << 8) | u64::from(b);
                    self.header_left -= 1;
                    i += 1;
                    if self.header_left == 0 {
                        self.after_length();
                    }
                }
                Stage::MaskingKey => {
                    self.key[usize::from(4 - self.header_left)] = b;
                    self.header_left -= 1;
                    i += 1;
                    if self.header_left == 0 {
                        self.enter_payload();
                    }
                }
                Stage::Payload => {
                    if self.opcode == OPCODE_CLOSE && self.code_len < 2 {
                        // The status code is the first two payload bytes,
                        // masked like the rest of the payload (§5.3).
                        let at = usize::from(self.code_len);
                        self.code[at] = b ^ self.key[at];
                        self.code_len += 1;
                        self.len -= 1;
                        i += 1;
                    } else {
                        let available = (bytes.len() - i) as u64;
                        let take = self.len.min(available);
                        // `take` <= `available`, which came from a usize.
                        i += take as usize;
                        self.len -= take;
                    }
                    if self.len == 0 {
                        self.end_frame();
                    }
                }
            }
            if stop_at_boundary && self.stage == Stage::Opcode {
                break;
            }
        }
        i
    }

    fn expect_extended_length(&mut self, bytes: u8) {
        self.len = 0;
        self.header_left = bytes;
        self.stage = Stage::ExtendedLength;
    }

    fn after_length(&mut self) {
        if self.masked {
            self.header_left = 4;
            self.stage = Stage::MaskingKey;
        } else {
            self.key = [0; 4];
            self.enter_payload();
        }
    }

    fn enter_payload(&mut self) {
        self.code_len = 0;
        if self.len == 0 {
            self.end_frame();
        } else {
            self.stage = Stage::Payload;
        }
    }

    fn end_frame(&mut self) {
        if self.opcode == OPCODE_CLOSE && !self.close_seen {
            self.close_seen = true;
            self.close_code = (self.code_len == 2).then(|| u16::from_be_bytes(self.code));
        }
        self.stage = Stage::Opcode;
    }
}

/// A Close frame carrying `code`, as sent towards the client: frames from a
/// server are never masked (RFC 6455 §5.1).
pub fn close_frame_unmasked(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    // FIN + opcode 0x8; unmasked, 2-byte payload (§5.5.1).
    [0x80 | OPCODE_CLOSE, 0x02, hi, lo]
}

/// A Close frame carrying `code`, as sent towards the backend: there the
/// gateway is the client, and every client frame MUST be masked
/// (RFC 6455 §5.1, §5.3).
pub fn close_frame_masked(code: u16) -> [u8; 8] {
    // §5.3 asks for an unpredictable key so that script-chosen payloads
    // cannot steer the bytes on the wire; this payload is fixed by the
    // gateway, so a fast non-cryptographic generator is sufficient.
    let key = fastrand::u32(..).to_ne_bytes();
    let [hi, lo] = code.to_be_bytes();
    [
        0x80 | OPCODE_CLOSE,
        0x80 | 0x02,
        key[0],
        key[1],
        key[2],
        key[3],
        hi ^ key[0],
        lo ^ key[1],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds one frame by hand (RFC 6455 §5.2).
    fn frame(fin: bool, opcode: u8, key: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let mask_bit = if key.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match key {
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        out
    }

    fn close_payload(code: u16, reason: &str) -> Vec<u8> {
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(reason.as_bytes());
        p
    }

    const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

    /// Feeds `stream` byte by byte and checks the tracker reports a boundary
    /// exactly where frames end.
    fn check_boundaries(stream: &[u8], frame_ends: &[usize]) {
        let mut t = FrameTracker::new();
        assert!(t.at_boundary());
        for (i, b) in stream.iter().enumerate() {
            t.advance(std::slice::from_ref(b));
            assert_eq!(
                t.at_boundary(),
                frame_ends.contains(&(i + 1)),
                "after byte {i}"
            );
        }
    }

    #[test]
    fn header_split_at_every_position() {
        let payloads: [&[u8]; 4] = [b"", b"hello", &[7u8; 300], &[9u8; 70_000]];
        for payload in payloads {
            for key in [None, KEY] {
                let f = frame(true, 0x2, key, payload);
                for cut in 0..=f.len() {
                    let mut t = FrameTracker::new();
                    t.advance(&f[..cut]);
                    assert_eq!(t.at_boundary(), cut == 0 || cut == f.len(), "cut {cut}");
                    t.advance(&f[cut..]);
                    assert!(t.at_boundary(), "cut {cut} len {}", payload.len());
                    assert!(!t.close_seen());
                }
            }
        }
    }

    #[test]
    fn seven_sixteen_and_sixty_four_bit_lengths() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 100_000] {
            for key in [None, KEY] {
                let payload = vec![0xA5u8; len];
                let f = frame(true, 0x2, key, &payload);
                let header = f.len() - len;
                let expected =
                    2 + match len {
                        0..=125 => 0,
                        126..=65_535 => 2,
                        _ => 8,
                    } + if key.is_some() { 4 } else { 0 };
                assert_eq!(header, expected);
                let mut t = FrameTracker::new();
                t.advance(&f[..header]);
                assert_eq!(t.at_boundary(), len == 0, "len {len}");
                if len > 0 {
                    t.advance(&f[header..f.len() - 1]);
                    assert!(!t.at_boundary());
                    t.advance(&f[f.len() - 1..]);
                }
                assert!(t.at_boundary(), "len {len}");
            }
        }
    }

    #[test]
    fn sixty_four_bit_length_is_tracked_without_buffering() {
        // 2^33 bytes announced: only the header is fed, then the payload is
        // skipped in chunks the size a relay would read.
        let len: u64 = 1 << 33;
        let mut header = vec![0x82, 127];
        header.extend_from_slice(&len.to_be_bytes());
        let mut t = FrameTracker::new();
        t.advance(&header);
        let chunk = [0u8; 16 * 1024];
        let mut left = len;
        while left > chunk.len() as u64 {
            t.advance(&chunk);
            left -= chunk.len() as u64;
            if left.is_multiple_of(1 << 30) {
                assert!(!t.at_boundary());
            }
        }
        t.advance(&chunk[..left as usize]);
        assert!(t.at_boundary());
    }

    #[test]
    fn interleaved_control_frames_between_fragments() {
        let parts = [
            frame(false, 0x1, KEY, b"frag-one"),
            frame(true, 0x9, KEY, b"ping"),
            frame(false, 0x0, KEY, &[b'x'; 200]),
            frame(true, 0xA, KEY, b""),
            frame(true, 0x0, KEY, b"last"),
            frame(true, 0x2, KEY, &[1u8; 70_000]),
        ];
        let mut stream = Vec::new();
        let mut ends = Vec::new();
        for p in &parts {
            stream.extend_from_slice(p);
            ends.push(stream.len());
        }
        check_boundaries(&stream, &ends);

        // In one chunk, and in odd-sized chunks.
        for chunk in [stream.len(), 1, 3, 7, 125, 4096] {
            let mut t = FrameTracker::new();
            for c in stream.chunks(chunk) {
                t.advance(c);
            }
            assert!(t.at_boundary(), "chunk {chunk}");
            assert!(!t.close_seen());
        }
    }

    #[test]
    fn close_detection_unmasked_and_masked() {
        for key in [None, KEY] {
            let mut stream = frame(true, 0x1, key, b"bye");
            let data_end = stream.len();
            stream.extend(frame(true, OPCODE_CLOSE, key, &close_payload(1000, "done")));
            for cut in data_end..stream.len() {
                let mut t = FrameTracker::new();
                t.advance(&stream[..cut]);
                assert!(!t.close_seen(), "cut {cut}");
                assert_eq!(t.close_code(), None);
                t.advance(&stream[cut..]);
                assert!(t.close_seen(), "cut {cut}");
                assert_eq!(t.close_code(), Some(1000), "cut {cut}");
                assert!(t.at_boundary());
            }
        }
    }

    #[test]
    fn close_without_body_has_no_code() {
        let mut t = FrameTracker::new();
        t.advance(&frame(true, OPCODE_CLOSE, KEY, b""));
        assert!(t.close_seen());
        assert_eq!(t.close_code(), None);
    }

    #[test]
    fn first_close_code_is_kept() {
        let mut t = FrameTracker::new();
        t.advance(&frame(true, OPCODE_CLOSE, None, &close_payload(4000, "")));
        t.advance(&frame(true, OPCODE_CLOSE, None, &close_payload(1000, "")));
        assert_eq!(t.close_code(), Some(4000));
    }

    #[test]
    fn payload_bytes_that_look_like_close_are_ignored() {
        // A binary frame whose payload is itself a Close frame's bytes.
        let inner = frame(true, OPCODE_CLOSE, None, &close_payload(1000, ""));
        let mut t = FrameTracker::new();
        t.advance(&frame(true, 0x2, KEY, &inner));
        assert!(t.at_boundary());
        assert!(!t.close_seen());
    }

    #[test]
    fn advance_to_boundary_stops_at_frame_end() {
        let first = frame(true, 0x2, KEY, &[3u8; 100]);
        let second = frame(true, 0x1, KEY, b"next");
        let mut stream = first.clone();
        stream.extend_from_slice(&second);

        // Already at a boundary: nothing is consumed.
        let mut t = FrameTracker::new();
        assert_eq!(t.advance_to_boundary(&stream), 0);

        for cut in 1..first.len() {
            let mut t = FrameTracker::new();
            t.advance(&stream[..cut]);
            let n = t.advance_to_boundary(&stream[cut..]);
            assert_eq!(cut + n, first.len(), "cut {cut}");
            assert!(t.at_boundary());
            // The rest is the next frame, which follows normally.
            t.advance(&stream[cut + n..]);
            assert!(t.at_boundary());
        }

        // A short chunk that does not reach the end is fully consumed.
        let mut t = FrameTracker::new();
        t.advance(&stream[..10]);
        assert_eq!(t.advance_to_boundary(&stream[10..20]), 10);
        assert!(!t.at_boundary());
    }

    #[test]
    fn advance_to_boundary_reports_a_close_in_flight() {
        let close = frame(true, OPCODE_CLOSE, KEY, &close_payload(1000, "x"));
        let mut t = FrameTracker::new();
        t.advance(&close[..3]);
        let n = t.advance_to_boundary(&close[3..]);
        assert_eq!(n, close.len() - 3);
        assert!(t.close_seen());
        assert_eq!(t.close_code(), Some(1000));
    }

    #[test]
    fn any_chunking_gives_the_same_result() {
        // Arbitrary bytes (not necessarily valid frames) must never panic,
        // and how they are split must not matter.
        let mut rng = fastrand::Rng::with_seed(6455);
        for _ in 0..200 {
            let len = rng.usize(0..2000);
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let mut whole = FrameTracker::new();
            whole.advance(&bytes);
            let mut split = FrameTracker::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.usize(1..=rest.len().min(40)));
                split.advance(a);
                rest = b;
            }
            assert_eq!(whole.at_boundary(), split.at_boundary());
            assert_eq!(whole.close_seen(), split.close_seen());
            assert_eq!(whole.close_code(), split.close_code());
        }
    }

    #[test]
    fn injected_unmasked_close_decodes() {
        let f = close_frame_unmasked(CLOSE_GOING_AWAY);
        // By hand: FIN set, RSV clear, opcode 8, no mask, length 2, code.
        assert_eq!(f[0], 0x88);
        assert_eq!(f[1], 0x02);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]), 1001);
        assert_eq!(
            f,
            frame(true, OPCODE_CLOSE, None, &1001u16.to_be_bytes())[..]
        );

        let mut t = FrameTracker::new();
        t.advance(&f);
        assert!(t.at_boundary());
        assert!(t.close_seen());
        assert_eq!(t.close_code(), Some(1001));
    }

    #[test]
    fn injected_masked_close_decodes() {
        let mut keys = std::collections::HashSet::new();
        for _ in 0..32 {
            let f = close_frame_masked(CLOSE_GOING_AWAY);
            assert_eq!(f[0], 0x88);
            assert_eq!(f[1], 0x82, "mask bit set, length 2");
            let key = [f[2], f[3], f[4], f[5]];
            keys.insert(key);
            assert_eq!(u16::from_be_bytes([f[6] ^ key[0], f[7] ^ key[1]]), 1001);
            assert_eq!(
                f,
                frame(true, OPCODE_CLOSE, Some(key), &1001u16.to_be_bytes())[..]
            );

            for cut in 0..=f.len() {
                let mut t = FrameTracker::new();
                t.advance(&f[..cut]);
                t.advance(&f[cut..]);
                assert!(t.at_boundary());
                assert!(t.close_seen());
                assert_eq!(t.close_code(), Some(1001));
            }
        }
        assert!(keys.len() > 1, "masking keys vary");
    }
}
