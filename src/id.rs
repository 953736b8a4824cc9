//! What makes a client id valid: for polls and publishes alike, without the
//! request extraction of `client_id.rs`.

use std::fmt;

/// Why a client id is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidId {
    /// The id is empty.
    Empty,
    /// The id is longer than the limit, in bytes once decoded.
    TooLong {
        /// Its length in bytes, once decoded.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The id contains a control character (such as NUL, CR, LF or DEL).
    ControlCharacter,
    /// The id is not valid UTF-8.
    NotUtf8,
}

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InvalidId::Empty => f.write_str("invalid client id: it is empty"),
            InvalidId::TooLong { len, limit } => write!(
                f,
                "invalid client id: it is {len} bytes long, the limit is {limit}"
            ),
            InvalidId::ControlCharacter => {
                f.write_str("invalid client id: it contains a control character")
            }
            InvalidId::NotUtf8 => f.write_str("invalid client id: it is not valid UTF-8"),
        }
    }
}

impl std::error::Error for InvalidId {}

/// Checks an id as decoded.
pub(crate) fn check_id(id: &str, max_len: usize) -> Result<(), InvalidId> {
    if id.is_empty() {
        return Err(InvalidId::Empty);
    }
    if id.len() > max_len {
        return Err(InvalidId::TooLong {
            len: id.len(),
            limit: max_len,
        });
    }
    if id.chars().any(char::is_control) {
        return Err(InvalidId::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checks_ids() {
        assert_eq!(check_id("", 256), Err(InvalidId::Empty));
        assert_eq!(check_id("a\nb", 256), Err(InvalidId::ControlCharacter));
        assert_eq!(check_id("a\u{7f}", 256), Err(InvalidId::ControlCharacter));
        assert_eq!(check_id("a\u{85}", 256), Err(InvalidId::ControlCharacter));
        assert_eq!(
            check_id(&"x".repeat(257), 256),
            Err(InvalidId::TooLong {
                len: 257,
                limit: 256
            })
        );
        assert_eq!(check_id(&"x".repeat(256), 256), Ok(()));
        assert_eq!(check_id("ünïcødé/with spaces", 256), Ok(()));
    }

    proptest! {
        #[test]
        fn any_accepted_id_is_short_printable_utf8(text in "\\PC{0,300}|[\\x00-\\x1f]{1,3}") {
            if check_id(&text, 256).is_ok() {
                prop_assert!(!text.is_empty() && text.len() <= 256);
                prop_assert!(!text.chars().any(char::is_control));
            }
        }
    }
}
