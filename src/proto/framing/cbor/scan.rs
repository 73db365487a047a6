//! The incremental boundary scanner: finds where a CBOR packet ends without decoding it, and
//! refuses on the way everything a value read refuses, so that a packet it cuts is well-formed.

use super::{
    MAJOR_ARRAY, MAJOR_BYTES, MAJOR_MAP, MAJOR_NEGINT, MAJOR_SIMPLE, MAJOR_TAG, MAJOR_TEXT,
    MAJOR_UINT, MAX_DEPTH, definite_head, malformed, read_head, too_large,
};
use crate::proto::framing::{Frame, Framing, FramingError};

/// What the scanner still waits for inside an open container.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A definite array: this many items still to come.
    Items(u64),
    /// A definite map: this many keys and values still to come (a key is due when it is even).
    Entries(u64),
    /// An indefinite array, closed by a break.
    Indefinite,
    /// An indefinite map, closed by a break (not while a value is due).
    IndefiniteMap {
        /// The next item is a key.
        key_due: bool,
    },
    /// An indefinite string of this major type: definite chunks of the same type, then a break.
    Chunks(u8),
}

/// Incremental packet finder. After it returns a frame, the caller removes `buf[..end]` and the
/// scanner must be ready for the bytes that followed. It returns only well-formed packets: it
/// refuses everything [`super::to_value`] refuses.
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
        // Only at a packet's start: after a miss the general walk keeps its place past the array
        // head (unless that head is still incomplete), so no packet is walked twice over again.
        if self.pos == 0
            && self.stack.is_empty()
            && let Some(end) = flat_packet(buf)
            && end <= max
        {
            return Ok(Some(Frame { start: 0, end }));
        }
        self.scan_general(buf, max)
    }

    /// The full state machine: any item shape, any chunking, every error.
    fn scan_general(&mut self, buf: &[u8], max: usize) -> Result<Option<Frame>, FramingError> {
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
            // A value is built for every key (Perl's hash keys are strings): not from a container.
            if matches!(head.major, MAJOR_ARRAY | MAJOR_MAP) && self.key_due() {
                return Err(malformed("map key is an array or a map"));
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
                MAJOR_ARRAY if head.indefinite() => self.stack.push(Pending::Indefinite),
                MAJOR_MAP if head.indefinite() => {
                    self.stack.push(Pending::IndefiniteMap { key_due: true })
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
                    } else if head.major == MAJOR_MAP {
                        self.stack.push(Pending::Entries(items));
                    } else {
                        self.stack.push(Pending::Items(items));
                    }
                }
                MAJOR_TAG => self.tagged = true,
                _ if is_break => match self.stack.pop() {
                    Some(
                        Pending::Indefinite
                        | Pending::IndefiniteMap { key_due: true }
                        | Pending::Chunks(_),
                    ) => complete = true,
                    Some(Pending::IndefiniteMap { key_due: false }) => {
                        return Err(malformed("map ends between a key and its value"));
                    }
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

    /// Whether the next data item is a map key.
    fn key_due(&self) -> bool {
        match self.stack.last() {
            Some(Pending::Entries(n)) => n % 2 == 0,
            Some(Pending::IndefiniteMap { key_due }) => *key_due,
            _ => false,
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
                Some(Pending::Items(n) | Pending::Entries(n)) => {
                    *n -= 1;
                    if *n > 0 {
                        return None;
                    }
                    self.stack.pop();
                }
                Some(Pending::IndefiniteMap { key_due }) => {
                    *key_due = !*key_due;
                    return None;
                }
                Some(Pending::Indefinite | Pending::Chunks(_)) => return None,
            }
        }
    }
}

/// The end of a complete packet of the shape CBOR::XS writes for flat messages: a definite array
/// of integers, simple values, floats and definite strings. `None` for anything else (other
/// shapes, incomplete or malformed bytes), which the general walk then decides.
///
/// When it answers, the general walk would give the same frame: it checks only the array head
/// against `max` (covered by `end` as every item takes a byte) and each item's end (at most
/// `end`), and its depth never exceeds one.
#[inline]
fn flat_packet(buf: &[u8]) -> Option<usize> {
    let (MAJOR_ARRAY, mut left, mut pos) = definite_head(buf, 0)? else {
        return None;
    };
    while left > 0 {
        let (major, arg, next) = definite_head(buf, pos)?;
        pos = match major {
            MAJOR_UINT | MAJOR_NEGINT | MAJOR_SIMPLE => next,
            MAJOR_BYTES | MAJOR_TEXT => {
                let end = usize::try_from(arg).ok()?.checked_add(next)?;
                if end > buf.len() {
                    return None;
                }
                end
            }
            _ => return None,
        };
        left -= 1;
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::tests::{EXAMPLE, MAX, arb_stream, hex, s, scan_all};
    use super::super::to_value;
    use super::*;
    use crate::proto::value::Value;

    /// What a reader sees feeding `stream` in pieces of the sizes `chunks` (cycled, a 0 taken
    /// as 1): the packets cut, then the error or the bytes left over.
    fn feed(
        stream: &[u8],
        chunks: &[usize],
        max: usize,
        general_only: bool,
    ) -> (Vec<Vec<u8>>, Result<usize, FramingError>) {
        let mut scanner = Scanner::default();
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        let mut fed = 0;
        for &c in chunks.iter().cycle() {
            if fed == stream.len() {
                break;
            }
            let next = (fed + c.max(1)).min(stream.len());
            buf.extend_from_slice(&stream[fed..next]);
            fed = next;
            loop {
                let found = if general_only {
                    scanner.scan_general(&buf, max)
                } else {
                    scanner.scan(&buf, max)
                };
                match found {
                    Ok(Some(f)) => {
                        assert_eq!(f.start, 0);
                        frames.push(buf.drain(..f.end).collect());
                    }
                    Ok(None) => break,
                    Err(e) => return (frames, Err(e)),
                }
            }
        }
        (frames, Ok(buf.len()))
    }

    #[test]
    fn flat_packets_take_the_fast_path() {
        // ["MLq1er3ECb", "ref-v1-client#MSqCakYotb", 0, "abcdefghijklmnop"] from a capture.
        let echo = hex(
            "844a4d4c713165723345436258187265662d76312d636c69656e74234d537143616b596f74620050\
             6162636465666768696a6b6c6d6e6f70",
        );
        assert_eq!(flat_packet(&echo), Some(echo.len()));
        assert_eq!(flat_packet(&hex("80 01")), Some(1));
        assert_eq!(flat_packet(&hex("83 f6 fb 41dac1edae21b1eb 20")), Some(12));
        for n in 0..echo.len() {
            assert_eq!(flat_packet(&echo[..n]), None, "prefix {n}");
        }
        // Other shapes are left to the general walk.
        for other in [
            EXAMPLE,
            "9f 40 ff",
            "82 40 c1 01",
            "82 40 81 01",
            "82 40 5f ff",
            "a0",
        ] {
            assert_eq!(flat_packet(&hex(other)), None, "{other}");
        }
        assert_eq!(flat_packet(&hex("82 40 fc")), None);
        assert_eq!(flat_packet(&hex("82 40 ff")), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whenever the fast path answers, the general walk gives the same frame.
        #[test]
        fn fast_path_frames_are_those_of_the_general_walk(
            stream in arb_stream(),
            max in prop_oneof![Just(MAX), 1usize..80],
        ) {
            if let Some(end) = flat_packet(&stream) {
                let want = (end <= max).then_some(Frame { start: 0, end });
                let general = Scanner::default().scan_general(&stream, max);
                match want {
                    Some(frame) => prop_assert_eq!(general, Ok(Some(frame))),
                    // Over the limit: the general walk refuses it, and so does `scan`.
                    None => {
                        let refused = matches!(general, Err(FramingError::TooLarge { .. }));
                        prop_assert!(refused);
                        prop_assert_eq!(Scanner::default().scan(&stream, max), general);
                    }
                }
            }
        }

        /// Same packets and errors with and without the fast path, in random pieces, in pieces of
        /// one byte, and split in two at every byte.
        #[test]
        fn fast_path_changes_nothing_under_any_chunking(
            stream in arb_stream(),
            chunks in proptest::collection::vec(1usize..48, 1..12),
            max in prop_oneof![3 => Just(MAX), 1 => 1usize..80],
        ) {
            for chunks in [chunks, vec![1], vec![stream.len()]] {
                prop_assert_eq!(
                    feed(&stream, &chunks, max, false),
                    feed(&stream, &chunks, max, true),
                    "chunks {:?}", chunks
                );
            }
            for at in 0..=stream.len() {
                let chunks = [at, stream.len()];
                prop_assert_eq!(
                    feed(&stream, &chunks, max, false),
                    feed(&stream, &chunks, max, true),
                    "split at {}", at
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The scanner checks what reading a value checks: a packet it cuts reads as a value.
        #[test]
        fn cut_packets_read_as_values(stream in arb_stream()) {
            let mut rest = &stream[..];
            while let Ok(Some(f)) = Scanner::default().scan(rest, MAX) {
                let packet = &rest[f.start..f.end];
                prop_assert!(to_value(packet).is_ok(), "{}", ::hex::encode(packet));
                rest = &rest[f.end..];
            }
        }

        /// Over well-framed items with any map keys (containers too) and indefinite maps that
        /// may lack their last value, the scanner refuses exactly what reading a value refuses.
        #[test]
        fn the_scanner_refuses_what_to_value_refuses(item in arb_keyed_item()) {
            let packet = [hex("82 40"), item].concat();
            let scanned = scan_all(&packet);
            let read = to_value(&packet);
            prop_assert_eq!(
                scanned.is_ok(),
                read.is_ok(),
                "{}: {:?} / {:?}", ::hex::encode(&packet), scanned, read
            );
            if let Ok(frame) = scanned {
                prop_assert_eq!(frame, Some(Frame { start: 0, end: packet.len() }));
            }
        }
    }

    /// Items whose framing is right, in maps keyed by anything (arrays and maps too); an
    /// indefinite map may end right after a key.
    fn arb_keyed_item() -> impl Strategy<Value = Vec<u8>> {
        use super::super::BREAK;
        use super::super::tests::{arb_flat_item, head};
        arb_flat_item().prop_recursive(4, 32, 4, |inner| {
            let entries = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
            prop_oneof![
                (
                    proptest::collection::vec(inner.clone(), 0..4),
                    any::<bool>()
                )
                    .prop_map(|(items, indefinite)| if indefinite {
                        [vec![0x9f], items.concat(), vec![BREAK]].concat()
                    } else {
                        [head(MAJOR_ARRAY, items.len() as u64, 0), items.concat()].concat()
                    }),
                (entries.clone(), 0u8..3, proptest::option::of(inner.clone())).prop_map(
                    |(entries, form, dangling)| {
                        let body: Vec<u8> = entries
                            .iter()
                            .flat_map(|(k, v)| [&k[..], &v[..]].concat())
                            .collect();
                        match (form, dangling) {
                            (0, _) => [head(MAJOR_MAP, entries.len() as u64, 0), body].concat(),
                            (_, Some(key)) if form == 2 => {
                                [vec![0xbf], body, key, vec![BREAK]].concat()
                            }
                            _ => [vec![0xbf], body, vec![BREAK]].concat(),
                        }
                    }
                ),
                (0u64..300, inner).prop_map(|(t, i)| [head(MAJOR_TAG, t, 0), i].concat()),
            ]
        })
    }

    #[test]
    fn map_keys_are_scalars_and_maps_end_after_a_value() {
        for bad in [
            "82 40 a1 81 01 02",          // {[1]: 2}
            "82 40 a1 a0 01",             // {{}: 1}
            "82 40 a1 c1 81 01 02",       // {tag [1]: 2}
            "82 40 a2 01 02 81 01 03",    // {1: 2, [1]: 3}
            "82 40 bf 80 01 ff",          // {_ []: 1}
            "82 40 bf 01 02 9f ff 03 ff", // {_ 1: 2, [_]: 3}
            "82 40 bf 41 6b ff",          // {_ "k"}: no value
            "82 40 bf 01 02 41 6b ff",    // {_ 1: 2, "k"}: no value
        ] {
            assert_eq!(
                scan_all(&hex(bad)).map(|_| ()),
                Err(malformed(if bad.ends_with("6b ff") {
                    "map ends between a key and its value"
                } else {
                    "map key is an array or a map"
                })),
                "{bad}"
            );
            assert!(to_value(&hex(bad)).is_err(), "{bad}");
        }
        for good in [
            "82 40 a1 41 6b 81 01",             // {"k": [1]}
            "82 40 a2 01 a0 02 81 a0",          // {1: {}, 2: [{}]}
            "82 40 bf 41 6b 81 01 41 6c a0 ff", // {_ "k": [1], "l": {}}
            "82 40 bf 5f 41 6b ff 01 ff",       // {_ (_ "k"): 1}
            "82 40 bf ff",                      // {_ }
            "82 40 a1 c1 41 6b c1 81 01",       // {tag "k": tag [1]}
            "82 40 81 a1 01 a1 02 80",          // [{1: {2: []}}]
        ] {
            let bytes = hex(good);
            assert_eq!(
                scan_all(&bytes).unwrap().unwrap().end,
                bytes.len(),
                "{good}"
            );
            assert!(to_value(&bytes).is_ok(), "{good}");
        }
    }

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
