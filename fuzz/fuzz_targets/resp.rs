//! Fuzzes the RESP2 reply decoder of the blocking-read connection
//! (`src/resp.rs`): any bytes give a value, "not yet" or an error, never a
//! panic; whatever it decodes, redis-rs's own parser decodes the same way.

#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace::fuzz_api;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((v, used))) = fuzz_api::decode_resp(data) {
        assert!(used <= data.len());
        // redis-rs agrees on what a whole reply says.
        if let Ok(theirs) = redis::parse_redis_value(&data[..used]) {
            assert_eq!(v, theirs);
        }
    }
});
