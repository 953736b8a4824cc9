//! Cursors: a client's position in the log of its id.

use std::fmt;
use std::str::FromStr;

/// A position in the event log of one client id.
///
/// A cursor names the last event a client has. Clients treat it as an opaque
/// string: they read it from the `ETag` of a response and send it back on the
/// next poll (`?since=`, `Last-Event-ID` or `If-None-Match`).
///
/// Inside, a cursor is an *epoch* and a *sequence number*. The epoch names one
/// incarnation of a log: when a process restarts, or an idle id is evicted and
/// later comes back, its log gets a new epoch, so a cursor issued before is
/// recognised as stale and the next response carries `Longpoll-Gap: true`
/// instead of silently skipping what was lost. Within one epoch, cursors are
/// ordered by their sequence number, which starts at 1 for the first event;
/// sequence 0 means "before the first event".
///
/// The text form is `<epoch: 16 lowercase hex digits>-<sequence: decimal>`,
/// for example `8f3a09c1d2e4b750-42`. [`Cursor::from_str`] accepts exactly
/// that form (hex digits in either case) and nothing else.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    epoch: u64,
    seq: u64,
}

/// The longest text form of a cursor: 16 hex digits, `-`, 20 decimal digits.
pub(crate) const MAX_CURSOR_LEN: usize = 16 + 1 + 20;

impl Cursor {
    /// A cursor for sequence number `seq` of the log incarnation `epoch`.
    pub const fn new(epoch: u64, seq: u64) -> Self {
        Cursor { epoch, seq }
    }

    /// The epoch: which incarnation of the log this cursor belongs to.
    pub const fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The sequence number within the epoch; 0 is "before the first event".
    pub const fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes the text form into a fixed buffer, without allocating.
    pub(crate) fn encode(&self) -> EncodedCursor {
        let mut buf = [0u8; MAX_CURSOR_LEN];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, slot) in buf[..16].iter_mut().enumerate() {
            let shift = 60 - 4 * i;
            *slot = HEX[((self.epoch >> shift) & 0xf) as usize];
        }
        buf[16] = b'-';
        let mut digits = [0u8; 20];
        let mut n = self.seq;
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..count {
            buf[17 + i] = digits[count - 1 - i];
        }
        EncodedCursor {
            buf,
            len: 17 + count,
        }
    }
}

/// The text form of a cursor on the stack.
pub(crate) struct EncodedCursor {
    buf: [u8; MAX_CURSOR_LEN],
    len: usize,
}

impl EncodedCursor {
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits, '-' and decimal digits are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }

    /// The cursor as a quoted entity tag: `"<cursor>"`.
    pub(crate) fn etag(&self) -> http::HeaderValue {
        let mut quoted = [0u8; MAX_CURSOR_LEN + 2];
        quoted[0] = b'"';
        quoted[1..=self.len].copy_from_slice(&self.buf[..self.len]);
        quoted[self.len + 1] = b'"';
        http::HeaderValue::from_bytes(&quoted[..self.len + 2])
            .expect("a cursor is always a valid header value")
    }
}

/// Cursors of one epoch are ordered by sequence number; cursors of
/// different epochs are not comparable (`partial_cmp` is `None`).
impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (self.epoch == other.epoch).then(|| self.seq.cmp(&other.seq))
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.encode().as_str())
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cursor({})", self.encode().as_str())
    }
}

/// The text given as a cursor is not of the form `<16 hex digits>-<decimal>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseCursorError {
    reason: &'static str,
}

impl ParseCursorError {
    pub(crate) fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ParseCursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed cursor: {}", self.reason)
    }
}

impl std::error::Error for ParseCursorError {}

impl FromStr for Cursor {
    type Err = ParseCursorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| Err(ParseCursorError { reason });
        let error = |reason| ParseCursorError { reason };
        if text.is_empty() {
            return fail("it is empty");
        }
        if text.len() > MAX_CURSOR_LEN {
            return fail("it is too long");
        }
        let Some((epoch, seq)) = text.split_once('-') else {
            return fail("expected <epoch>-<sequence>");
        };
        if epoch.len() != 16 || !epoch.bytes().all(|b| b.is_ascii_hexdigit()) {
            return fail("the epoch must be 16 hex digits");
        }
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return fail("the sequence must be decimal digits");
        }
        let epoch =
            u64::from_str_radix(epoch, 16).map_err(|_| error("the epoch is out of range"))?;
        let seq = seq
            .parse::<u64>()
            .map_err(|_| error("the sequence is out of range"))?;
        Ok(Cursor { epoch, seq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_form_is_fixed_width_epoch_and_decimal_sequence() {
        let cursor = Cursor::new(0x8f3a_09c1_d2e4_b750, 42);
        assert_eq!(cursor.to_string(), "8f3a09c1d2e4b750-42");
        assert_eq!(Cursor::new(0, 0).to_string(), "0000000000000000-0");
        assert_eq!(
            Cursor::new(u64::MAX, u64::MAX).to_string(),
            "ffffffffffffffff-18446744073709551615"
        );
        assert_eq!(cursor.encode().etag(), "\"8f3a09c1d2e4b750-42\"");
    }

    #[test]
    fn cursors_order_within_an_epoch_only() {
        assert!(Cursor::new(1, 2) < Cursor::new(1, 3));
        assert!(Cursor::new(1, 3) > Cursor::new(1, 2));
        assert_eq!(Cursor::new(1, 9).partial_cmp(&Cursor::new(2, 1)), None);
    }

    #[test]
    fn rejects_everything_but_the_exact_form() {
        for bad in [
            "",
            "-",
            "42",
            "8f3a09c1d2e4b750",
            "8f3a09c1d2e4b750-",
            "8f3a09c1d2e4b75-1",
            "8f3a09c1d2e4b7500-1",
            "8f3a09c1d2e4b75g-1",
            "8f3a09c1d2e4b750-+1",
            "8f3a09c1d2e4b750--1",
            "8f3a09c1d2e4b750-1 ",
            " 8f3a09c1d2e4b750-1",
            "8f3a09c1d2e4b750-18446744073709551616",
            "8f3a09c1d2e4b750-1-2",
            "\"8f3a09c1d2e4b750-1\"",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} was accepted");
        }
    }

    proptest! {
        #[test]
        fn text_form_round_trips(epoch: u64, seq: u64) {
            let cursor = Cursor::new(epoch, seq);
            let text = cursor.to_string();
            prop_assert!(text.len() <= MAX_CURSOR_LEN);
            prop_assert_eq!(text.parse::<Cursor>(), Ok(cursor));
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,48}") {
            let _ = text.parse::<Cursor>();
        }

        #[test]
        fn uppercase_hex_is_the_same_cursor(epoch: u64, seq: u64) {
            let upper = format!("{epoch:016X}-{seq}");
            prop_assert_eq!(upper.parse::<Cursor>(), Ok(Cursor::new(epoch, seq)));
        }
    }
}
