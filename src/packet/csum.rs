//! Internet checksum (RFC 1071) and incremental updates (RFC 1624).

/// One's-complement sum of `data` as 16-bit big-endian words, added to `initial`.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut s = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        s += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        s += (*last as u64) << 8;
    }
    while s > 0xffff_ffff {
        s = (s & 0xffff_ffff) + (s >> 32);
    }
    s as u32
}

/// Folds a 32-bit sum to 16 bits and complements it: the value to store in a header.
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The checksum of `data` (e.g. an IPv4 header with its checksum field zeroed).
pub fn checksum(data: &[u8]) -> u16 {
    fold(sum(data, 0))
}

/// RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')` for one 16-bit word changing from `old` to `new`.
pub fn replace2(check: u16, old: u16, new: u16) -> u16 {
    let s = (!check as u32) + (!old as u32) + new as u32;
    fold(s)
}

/// `replace2` for a 32-bit field (an IPv4 address), as two 16-bit words.
pub fn replace4(check: u16, old: u32, new: u32) -> u16 {
    let s = (!check as u32)
        + (!(old >> 16) as u16 as u32)
        + (!(old as u16) as u32)
        + (new >> 16)
        + (new & 0xffff);
    fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2 (before complement).
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn incremental_equals_recomputed() {
        let mut d = [
            0x45u8, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 100, 10, 0, 0, 88,
        ];
        let c = checksum(&d);
        let old = u32::from_be_bytes([d[16], d[17], d[18], d[19]]);
        let new = u32::from_be_bytes([192, 168, 80, 10]);
        d[16..20].copy_from_slice(&new.to_be_bytes());
        assert_eq!(replace4(c, old, new), checksum(&d));
        let old16 = u16::from_be_bytes([d[2], d[3]]);
        d[2..4].copy_from_slice(&1500u16.to_be_bytes());
        let c2 = checksum(&d);
        d[2..4].copy_from_slice(&old16.to_be_bytes());
        let c1 = checksum(&d);
        assert_eq!(replace2(c1, old16, 1500), c2);
    }

    proptest::proptest! {
        #[test]
        fn replace4_matches_full(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 20..60),
                                 new in proptest::prelude::any::<u32>()) {
            let mut d = data.clone();
            d[10] = 0; d[11] = 0;
            let c = checksum(&d);
            let old = u32::from_be_bytes([d[12], d[13], d[14], d[15]]);
            d[12..16].copy_from_slice(&new.to_be_bytes());
            let full = checksum(&d);
            let inc = replace4(c, old, new);
            // 0x0000 and 0xffff are the same one's-complement value.
            proptest::prop_assert!(inc == full || (inc ^ full) == 0xffff && (inc == 0 || full == 0));
        }
    }
}
