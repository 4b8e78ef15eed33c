//! Where a key lives, computed by the suite itself: Kafka's default
//! partitioner (`Utils.murmur2`, then `& 0x7fffffff`, then `% partitions`),
//! written here from Kafka's Java source rather than taken from millrace, so
//! the ledger can check the partition a worker claims against the key.

/// Kafka's `Utils.murmur2` as a Java `int`, written the way the Java is.
pub fn murmur2(data: &[u8]) -> i32 {
    let length = data.len() as i32;
    let seed: i32 = 0x9747_b28c_u32 as i32;
    let m: i32 = 0x5bd1_e995;
    let r = 24;
    let mut h: i32 = seed ^ length;
    let length4 = length / 4;
    for i in 0..length4 {
        let i4 = (i * 4) as usize;
        let mut k: i32 = (data[i4] as i32 & 0xff)
            + ((data[i4 + 1] as i32 & 0xff) << 8)
            + ((data[i4 + 2] as i32 & 0xff) << 16)
            + ((data[i4 + 3] as i32 & 0xff) << 24);
        k = k.wrapping_mul(m);
        k ^= ((k as u32) >> r) as i32;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let tail = (length & !3) as usize;
    let rest = length % 4;
    if rest >= 3 {
        h ^= (data[tail + 2] as i32 & 0xff) << 16;
    }
    if rest >= 2 {
        h ^= (data[tail + 1] as i32 & 0xff) << 8;
    }
    if rest >= 1 {
        h ^= data[tail] as i32 & 0xff;
        h = h.wrapping_mul(m);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(m);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// The partition Kafka's default partitioner gives `key`.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) as u32) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn agrees_with_kafkas_own_test_values() {
        let cases: [(&str, i32); 6] = [
            ("21", -973932308),
            ("foobar", -790332482),
            ("a-little-bit-long-string", -985981536),
            ("a-little-bit-longer-string", -1486304829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            ("abc", 479470107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key.as_bytes()), want, "{key}");
        }
    }
}
