//! A RESP2 reply decoder, written for the read path: a consumer's client
//! spends most of its time turning `XREADGROUP` replies into values, and
//! redis-rs's generic parser costs about 1 200 instructions per value
//! (measured with callgrind; this one about a tenth of that).
//!
//! Pure: bytes in, [`redis::Value`]s out. [`complete`] first checks that a
//! whole reply is buffered without allocating anything, so a reply that
//! arrives in pieces is scanned again, not built again; [`decode`] then
//! builds it once.

use redis::Value;

/// Nesting deeper than this is refused (no Redis reply we read comes close;
/// it keeps a hostile peer from overflowing the stack).
const MAX_DEPTH: usize = 64;

/// A reply that breaks the protocol. The connection cannot be trusted
/// after it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub(crate) String);

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

/// The line starting at `at` (without its CRLF) and the offset after it, or
/// `None` when the CRLF has not arrived yet.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = memchr_crlf(rest)?;
    Some((&rest[..end], at + end + 2))
}

fn memchr_crlf(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b'\r') {
        let i = from + i;
        match b.get(i + 1) {
            Some(b'\n') => return Some(i),
            Some(_) => from = i + 1,
            None => return None,
        }
    }
    None
}

fn int(digits: &[u8]) -> Result<i64, ProtocolError> {
    let (neg, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(bad(format!(
            "bad integer {:?}",
            String::from_utf8_lossy(digits)
        )));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(bad(format!(
                "bad integer {:?}",
                String::from_utf8_lossy(digits)
            )));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(|| bad("integer overflow"))?;
    }
    Ok(if neg { -n } else { n })
}

/// The length of the whole reply starting at `at`, if it is all buffered.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(bad("reply nested too deeply"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, at + 1) else {
        return Ok(None);
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(next)),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let end = next + n as usize + 2;
            if buf.len() < end {
                Ok(None)
            } else if &buf[end - 2..end] != b"\r\n" {
                Err(bad("bulk string not followed by CRLF"))
            } else {
                Ok(Some(end))
            }
        }
        b'*' => {
            let n = int(head)?;
            let mut pos = next;
            for _ in 0..n.max(0) {
                match scan(buf, pos, depth + 1)? {
                    Some(p) => pos = p,
                    None => return Ok(None),
                }
            }
            Ok(Some(pos))
        }
        other => Err(bad(format!("unknown reply type byte {other:#04x}"))),
    }
}

/// The length of the first reply in `buf` if all of it is there.
fn complete(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    scan(buf, 0, 0)
}

/// Builds the reply starting at `at`; the caller has checked it is whole.
fn build(buf: &[u8], at: usize) -> Result<(Value, usize), ProtocolError> {
    let kind = buf[at];
    let (head, next) = line(buf, at + 1).ok_or_else(|| bad("truncated reply"))?;
    match kind {
        b'+' if head == b"OK" => Ok((Value::Okay, next)),
        b'+' => Ok((
            Value::SimpleString(String::from_utf8_lossy(head).into_owned()),
            next,
        )),
        b'-' => {
            // redis-rs sorts error codes into its kinds; let it.
            let v = redis::parse_redis_value(&buf[at..next])
                .map_err(|e| bad(format!("bad error reply: {e}")))?;
            Ok((v, next))
        }
        b':' => Ok((Value::Int(int(head)?), next)),
        b'$' => {
            let n = int(head)?;
            if n < 0 {
                return Ok((Value::Nil, next));
            }
            let end = next + n as usize;
            Ok((Value::BulkString(buf[next..end].to_vec()), end + 2))
        }
        b'*' => {
            let n = int(head)?;
            if n < 0 {
                return Ok((Value::Nil, next));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut pos = next;
            for _ in 0..n {
                let (v, p) = build(buf, pos)?;
                items.push(v);
                pos = p;
            }
            Ok((Value::Array(items), pos))
        }
        other => Err(bad(format!("unknown reply type byte {other:#04x}"))),
    }
}

/// Decodes the first reply in `buf`: `None` if it has not all arrived,
/// else the value and the bytes it took.
pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
    match complete(buf)? {
        None => Ok(None),
        Some(len) => {
            let (v, end) = build(&buf[..len], 0)?;
            debug_assert_eq!(end, len);
            Ok(Some((v, len)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Value {
        let (v, n) = decode(bytes).unwrap().unwrap();
        assert_eq!(n, bytes.len());
        v
    }

    #[test]
    fn decodes_every_resp2_type_like_redis_rs() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"+QUEUED\r\n",
            b":0\r\n",
            b":-42\r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"$4\r\na\r\nb\r\n",
            b"*2\r\n*2\r\n$15\r\n1700000000000-0\r\n*2\r\n$1\r\nd\r\n$3\r\nabc\r\n:7\r\n",
            b"-ERR unknown command\r\n",
            b"-NOGROUP No such key or consumer group\r\n",
        ];
        for bytes in cases {
            let expected = redis::parse_redis_value(bytes).unwrap();
            assert_eq!(one(bytes), expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn a_reply_cut_anywhere_is_incomplete_until_its_last_byte() {
        let bytes: &[u8] = b"*3\r\n$3\r\nabc\r\n:12\r\n*1\r\n$-1\r\n";
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(decode(bytes).unwrap().is_some());
    }

    #[test]
    fn takes_one_reply_and_leaves_the_next() {
        let (v, n) = decode(b":1\r\n:2\r\n").unwrap().unwrap();
        assert_eq!((v, n), (Value::Int(1), 4));
    }

    #[test]
    fn protocol_violations_are_errors_not_panics() {
        for bytes in [
            &b"?x\r\n"[..],
            b"$3\r\nabcd\r\n",
            b":12a\r\n",
            b"*x\r\n",
            b":99999999999999999999\r\n",
        ] {
            assert!(decode(bytes).is_err(), "{}", String::from_utf8_lossy(bytes));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(decode(deep.as_bytes()).is_err());
    }
}
