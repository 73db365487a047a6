//! The incremental boundary scanner: finds where a CBOR packet ends without decoding it.

use super::{
    MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT,
    MAJOR_UINT, MAX_DEPTH, malformed, read_head, too_large,
};
use crate::proto::framing::{Frame, Framing, FramingError};

/// What the scanner still waits for inside an open container.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A definite array or map: this many items (map: keys and values) still to come.
    Items(u64),
    /// An indefinite array or map, closed by a break.
    Indefinite,
    /// An indefinite string of this major type: definite chunks of the same type, then a break.
    Chunks(u8),
}

/// Incremental boundary finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed.
///
/// It walks item headers only, skipping string contents, and keeps the position and the stack of
/// open containers between calls, so a packet fed byte by byte is scanned once.
#[derive(Debug, Default)]
pub(in crate::proto::framing) struct Scanner {
    /// Bytes of the current packet already walked (always at an item boundary).
    pos: usize,
    /// Open containers, innermost last.
    stack: Vec<Pending>,
    /// The last header walked was a tag, so a data item must follow.
    tagged: bool,
}

impl Scanner {
    pub(in crate::proto::framing) fn scan(
        &mut self,
        buf: &[u8],
        max: usize,
    ) -> Result<Option<Frame>, FramingError> {
        loop {
            let Some(head) = read_head(buf, self.pos)? else {
                return self.incomplete(buf, max);
            };
            if self.pos == 0 && head.major != MAJOR_ARRAY {
                return Err(FramingError::NotAnArray {
                    framing: Framing::Cbor,
                });
            }
            if let Some(Pending::Chunks(major)) = self.stack.last() {
                let is_break = head.major == MAJOR_SIMPLE && head.indefinite();
                if !is_break && (head.major != *major || head.indefinite()) {
                    return Err(malformed("bad chunk in an indefinite-length string"));
                }
            }
            let is_break = head.major == MAJOR_SIMPLE && head.indefinite();
            if self.tagged && is_break {
                return Err(malformed("break after a tag"));
            }
            self.tagged = false;
            let mut advance = head.len as u64;
            let mut complete = false;
            match head.major {
                MAJOR_UINT | MAJOR_NEGINT => complete = true,
                MAJOR_BYTES | MAJOR_TEXT if head.indefinite() => {
                    self.stack.push(Pending::Chunks(head.major))
                }
                MAJOR_BYTES | MAJOR_TEXT => {
                    advance = advance.saturating_add(head.arg);
                    let end = (self.pos as u64).saturating_add(advance);
                    if end > max as u64 {
                        return Err(too_large(end, max));
                    }
                    if end > buf.len() as u64 {
                        return self.incomplete(buf, max);
                    }
                    complete = true;
                }
                MAJOR_ARRAY | MAJOR_MAP if head.indefinite() => {
                    self.stack.push(Pending::Indefinite)
                }
                MAJOR_ARRAY | MAJOR_MAP => {
                    let items = if head.major == MAJOR_MAP {
                        head.arg.saturating_mul(2)
                    } else {
                        head.arg
                    };
                    // Every item takes at least one byte.
                    let least = (self.pos as u64)
                        .saturating_add(advance)
                        .saturating_add(items);
                    if least > max as u64 {
                        return Err(too_large(least, max));
                    }
                    if items == 0 {
                        complete = true;
                    } else {
                        self.stack.push(Pending::Items(items));
                    }
                }
                MAJOR_TAG => self.tagged = true,
                _ if is_break => match self.stack.pop() {
                    Some(Pending::Indefinite | Pending::Chunks(_)) => complete = true,
                    _ => return Err(malformed("unexpected break")),
                },
                _ => complete = true,
            }
            if self.stack.len() > MAX_DEPTH {
                return Err(malformed("nested too deeply"));
            }
            let end = (self.pos as u64).saturating_add(advance);
            if end > max as u64 {
                return Err(too_large(end, max));
            }
            // `end` is within `buf` (headers were read from it, strings checked above).
            self.pos = end as usize;
            if complete && let Some(frame) = self.item_done() {
                return Ok(Some(frame));
            }
        }
    }

    /// `buf` ends inside the current packet: wait for more unless it cannot fit any more.
    fn incomplete(&self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
        if buf.len() >= max {
            return Err(too_large(buf.len() as u64 + 1, max));
        }
        Ok(None)
    }

    /// One item ended at `self.pos`: close the containers it completes; the frame if the packet
    /// itself is complete.
    fn item_done(&mut self) -> Option<Frame> {
        loop {
            match self.stack.last_mut() {
                None => {
                    let end = self.pos;
                    self.pos = 0;
                    self.tagged = false;
                    return Some(Frame { start: 0, end });
                }
                Some(Pending::Items(n)) => {
                    *n -= 1;
                    if *n > 0 {
                        return None;
                    }
                    self.stack.pop();
                }
                Some(Pending::Indefinite | Pending::Chunks(_)) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{EXAMPLE, MAX, hex, s, scan_all};
    use super::super::to_value;
    use super::*;
    use crate::proto::value::Value;

    #[test]
    fn byte_by_byte_feeding_finds_the_end_once() {
        let mut bytes = hex(EXAMPLE);
        bytes.extend(hex("82 41 78 f5"));
        let mut scanner = Scanner::default();
        let first_len = hex(EXAMPLE).len();
        for n in 0..first_len {
            assert_eq!(scanner.scan(&bytes[..n], MAX).unwrap(), None, "at {n}");
        }
        let frame = scanner.scan(&bytes[..first_len + 1], MAX).unwrap().unwrap();
        assert_eq!(frame.end, first_len);
        // The caller removes the packet; the scanner continues on what follows.
        let rest = &bytes[first_len..];
        assert_eq!(scanner.scan(&rest[..3], MAX).unwrap(), None);
        assert_eq!(scanner.scan(rest, MAX).unwrap().unwrap().end, 4);
        assert_eq!(
            to_value(rest).unwrap(),
            Value::Array(vec![s("x"), Value::Bool(true)])
        );
    }

    #[test]
    fn huge_declared_lengths_are_refused_at_once() {
        for bad in [
            "82 40 5b ffffffffffffffff",
            "82 40 5a 00100001",
            "82 40 9b ffffffffffffffff",
            "82 40 bb 8000000000000000",
            "9b 0000000000100000",
        ] {
            assert!(
                matches!(scan_all(&hex(bad)), Err(FramingError::TooLarge { .. })),
                "{bad}"
            );
            assert!(to_value(&hex(bad)).is_err(), "{bad}");
        }
        // A string that would end exactly at the limit is fine; one byte more is not.
        let mut ok = hex("82 40 59 0100");
        ok.resize(ok.len() + 256, b'x');
        assert!(Scanner::default().scan(&ok, ok.len()).unwrap().is_some());
        assert!(matches!(
            Scanner::default().scan(&ok, ok.len() - 1),
            Err(FramingError::TooLarge { .. })
        ));
        // Bytes over the limit without a complete packet.
        let many = vec![0x9f; 8];
        assert!(matches!(
            Scanner::default().scan(&many, 4),
            Err(FramingError::TooLarge { .. })
        ));
    }
}
