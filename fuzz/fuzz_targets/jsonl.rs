//! Fuzzes the CLI's JSON input: `publish --jsonl` lines, the DATA argument
//! of `publish` / `schedule add`, `--header` and `--at`. The parsing lives
//! in the binary (`src/bin/millrace/jsonl.rs`); this target compiles that
//! very file.
//!
//! Bad input must come back as an error message, never a panic; a line that
//! parses must pass or fail the library's `check_record` with a typed error,
//! and its payload must decode back to the line's `data`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use millrace::TopicSpec;
use millrace::check_record;

#[path = "../../src/bin/millrace/jsonl.rs"]
#[allow(dead_code)]
mod jsonl;

fuzz_target!(|data: &[u8]| {
    // The CLI splits stdin on '\n' and refuses lines that are not UTF-8
    // before parsing; lossy text covers both.
    let text = String::from_utf8_lossy(data);
    let spec = TopicSpec::new("t", 4).expect("a valid topic");
    for line in text.split('\n') {
        line_checks(&spec, line);
    }
    let whole = text.as_ref();
    if let Ok(v) = jsonl::parse_data(whole) {
        let payload = millrace::envelope::encode(&v).expect("JSON always encodes");
        let back: serde_json::Value = millrace::envelope::decode(&payload).expect("round trip");
        assert_eq!(back, v);
    }
    if let Ok((name, value)) = jsonl::parse_header(whole) {
        assert!(!name.is_empty());
        assert_eq!(format!("{name}={value}"), whole);
    }
    let _ = jsonl::parse_at(whole);
});

fn line_checks(spec: &TopicSpec, line: &str) {
    match jsonl::parse_line(line) {
        Ok(record) => {
            if let Err(e) = check_record(spec, &record, 1 << 20) {
                assert!(e.is_invalid_input(), "untyped error: {e:?}");
            }
            // The payload is the line's `data`, as MessagePack.
            let json: serde_json::Value = serde_json::from_str(line).expect("it parsed once");
            let back: serde_json::Value =
                millrace::envelope::decode(record.payload()).expect("payload decodes");
            assert_eq!(back, json["data"]);
        }
        Err(msg) => assert!(!msg.is_empty()),
    }
}
