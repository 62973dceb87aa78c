//! A stable hash for sticky routing: the same key lands in the same bucket on every instance,
//! every gateway and every version of this SDK.
//!
//! The hash is 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`) over the
//! key's bytes, and a bucket is the hash modulo the number of buckets. Both are part of the SDK's
//! contract: changing either would move users between backends, so it would be a breaking
//! change. FNV-1a is not keyed: do not use it where a client could gain from choosing colliding
//! keys, only to spread and pin traffic.

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`.
pub const fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash = OFFSET_BASIS;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(PRIME);
        i += 1;
    }
    hash
}

/// The bucket of `key` among `buckets` (`0..buckets`); `buckets` must not be zero.
pub fn bucket(key: &[u8], buckets: u32) -> u32 {
    assert!(buckets > 0, "at least one bucket");
    (fnv1a64(key) % u64::from(buckets)) as u32
}

/// Whether `key` falls in the first `percent` of 100 buckets: a stable `percent` % sample
/// (`in_percent(user, 10)` picks the same 10 % of users every time).
pub fn in_percent(key: &[u8], percent: u32) -> bool {
    bucket(key, 100) < percent
}

/// Picks an index with probability proportional to its weight, the same one for the same key.
/// `None` when every weight is zero.
pub fn pick_weighted(key: &[u8], weights: &[u32]) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let mut point = fnv1a64(key) % total;
    for (i, &w) in weights.iter().enumerate() {
        let w = u64::from(w);
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    unreachable!("point < total")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // The published FNV-1a 64 test vectors: these values must never change.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(bucket(b"user-42", 100), bucket(b"user-42", 100));
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[bucket(format!("user-{i}").as_bytes(), 10) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        let in_ten = (0..10_000)
            .filter(|i| in_percent(format!("session-{i}").as_bytes(), 10))
            .count();
        assert!((800..1200).contains(&in_ten), "{in_ten}");
    }

    #[test]
    fn weighted() {
        assert_eq!(pick_weighted(b"k", &[0, 0]), None);
        assert_eq!(pick_weighted(b"k", &[0, 5, 0]), Some(1));
        let mut counts = [0u32; 2];
        for i in 0..10_000 {
            counts[pick_weighted(format!("k{i}").as_bytes(), &[9, 1]).unwrap()] += 1;
        }
        assert!((800..1200).contains(&counts[1]), "{counts:?}");
    }
}
