//! Host and path matching, checked against simple reference implementations written from the
//! semantics in `wasmgate_rules::matching` (Application Gateway's): a glob over bytes that
//! ignores ASCII case, and prefix/exact path patterns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate_rules::matching::{
    host_matches, host_without_port, override_path, path_match_len, path_matches,
};

/// `*` any run of bytes, `?` exactly one, anything else itself ignoring ASCII case; by
/// dynamic programming, so it is obviously right rather than fast.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let mut row = vec![false; text.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; text.len() + 1];
        if p == b'*' {
            let mut any = false;
            for (i, cell) in next.iter_mut().enumerate() {
                any |= row[i];
                *cell = any;
            }
        } else {
            for i in 0..text.len() {
                next[i + 1] = row[i] && (p == b'?' || p.eq_ignore_ascii_case(&text[i]));
            }
        }
        row = next;
    }
    row[text.len()]
}

fuzz_target!(|input: (&str, &str, &str)| {
    let (pattern, subject, prefix) = input;
    // Host patterns are short in practice; the reference is quadratic.
    if pattern.len() <= 256 && subject.len() <= 256 {
        assert_eq!(
            host_matches(pattern, subject),
            glob(pattern.as_bytes(), subject.as_bytes()),
            "host_matches({pattern:?}, {subject:?})"
        );
    }

    let expected = match pattern.strip_suffix('*') {
        Some(p) => subject
            .as_bytes()
            .get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
            .then_some(p.len()),
        None => subject
            .eq_ignore_ascii_case(pattern)
            .then_some(pattern.len()),
    };
    let got = path_match_len(pattern, subject);
    assert_eq!(got, expected, "path_match_len({pattern:?}, {subject:?})");
    assert_eq!(path_matches(pattern, subject), got.is_some());
    if let Some(n) = got {
        assert!(
            subject.is_char_boundary(n),
            "matched length {n} splits a character"
        );
    }

    // A rewrite keeps the override in front and the unmatched rest of the path after it.
    let rewritten = override_path(prefix, subject, got);
    assert!(
        rewritten.starts_with(prefix),
        "{rewritten:?} lost its prefix {prefix:?}"
    );
    if let Some(n) = got {
        let rest = subject[n..].trim_start_matches('/');
        assert!(
            rewritten.ends_with(rest),
            "{rewritten:?} lost the rest {rest:?}"
        );
    }

    let host = host_without_port(subject);
    assert!(
        subject.starts_with(host),
        "{host:?} is not a prefix of {subject:?}"
    );
    // A bracketed (IPv6) host is returned with its brackets whatever follows them; the
    // gateway's request checks decide whether such an authority is acceptable at all.
    if subject.starts_with('[') {
        return;
    }
    if let Some(port) = subject.strip_prefix(host).and_then(|r| r.strip_prefix(':')) {
        assert!(
            port.bytes().all(|b| b.is_ascii_digit()),
            "stripped a non-port {port:?}"
        );
    }
});
