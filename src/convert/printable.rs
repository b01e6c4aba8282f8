//! Printable text: control characters made visible before untrusted text reaches a terminal.
//!
//! Span names, services, status messages, log group names and backend answers are written by
//! whoever can make a function log a string, or by a server spanline does not control. Printed
//! raw, an `ESC` starts a terminal escape sequence (clear the screen, set the window title, an
//! OSC 8 hyperlink), and the C1 byte U+009B is a one-character CSI on many terminals. Every such
//! string goes through [`visible`] (or the [`Visible`] wrapper in `format!`) on its way to
//! stdout or stderr.
//!
//! # The escaped form
//! * C0 controls (U+0000–U+001F, tab and newline included) and DEL (U+007F) become `\xHH`, two
//!   lowercase hex digits: ESC is `\x1b`, a newline `\x0a`.
//! * C1 controls (U+0080–U+009F) become `\u{HH}`: the CSI character is `\u{9b}`.
//! * Everything else, the backslash included, is left as it is. The result is meant for eyes,
//!   not for parsing back: a string that already contains the text `\x1b` prints the same as
//!   one that contains an ESC, and neither can drive the terminal.
//!
//! Text without controls (nearly all of it) is returned borrowed after one byte scan: C0 and
//! DEL are single bytes below 0x20 or 0x7F, and C1 characters are the two-byte UTF-8 sequences
//! `C2 80`–`C2 9F`, so no decoding is needed to find them.

use std::borrow::Cow;
use std::fmt;

/// Whether the byte at `i` starts a control character (C0, DEL, or the lead of a C1).
fn is_control_at(b: &[u8], i: usize) -> bool {
    match b[i] {
        0x00..=0x1f | 0x7f => true,
        0xc2 => matches!(b.get(i + 1), Some(0x80..=0x9f)),
        _ => false,
    }
}

/// The byte offset of the first control character in `s`, if any.
fn first_control(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len()).find(|&i| is_control_at(b, i))
}

/// `s` with every C0, DEL and C1 control character written as a visible escape (see the
/// module docs); borrowed when there is none.
pub fn visible(s: &str) -> Cow<'_, str> {
    match first_control(s) {
        None => Cow::Borrowed(s),
        Some(_) => Cow::Owned(Visible(s).to_string()),
    }
}

/// Whether `s` contains a control character that [`visible`] would escape.
pub fn has_control(s: &str) -> bool {
    first_control(s).is_some()
}

/// Displays a string with its control characters made visible, without allocating:
/// `format!("{}", Visible(name))`, `eprintln!("{}", Visible(&body))`.
#[derive(Clone, Copy, Debug)]
pub struct Visible<'a>(pub &'a str);

impl fmt::Display for Visible<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = first_control(rest) {
            f.write_str(&rest[..at])?;
            // `at` starts a character: C0/DEL are ASCII, a C1 lead byte is a char boundary.
            let c = rest[at..].chars().next().unwrap_or('\u{fffd}');
            let code = u32::from(c);
            if code < 0x80 {
                write!(f, "\\x{code:02x}")?;
            } else {
                write!(f, "\\u{{{code:02x}}}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        let table: &[(&str, &str)] = &[
            ("", ""),
            ("plain text", "plain text"),
            ("\u{1b}[2J", "\\x1b[2J"),
            ("\u{1b}]0;title\u{7}", "\\x1b]0;title\\x07"),
            (
                "\u{1b}]8;;http://evil\u{1b}\\x\u{1b}]8;;\u{1b}\\",
                "\\x1b]8;;http://evil\\x1b\\x\\x1b]8;;\\x1b\\",
            ),
            ("a\nb\tc\rd\0", "a\\x0ab\\x09c\\x0dd\\x00"),
            ("del\u{7f}", "del\\x7f"),
            ("csi\u{9b}31m", "csi\\u{9b}31m"),
            ("c1 edges \u{80}\u{9f}", "c1 edges \\u{80}\\u{9f}"),
            // Just outside C1: U+00A0 (no-break space) and U+00C2 itself are text.
            ("\u{a0}\u{c2}é", "\u{a0}\u{c2}é"),
            ("ünïcödé ✓ 日本 🚀", "ünïcödé ✓ 日本 🚀"),
            ("back\\slash \\x1b", "back\\slash \\x1b"),
            ("\u{1f}\u{20}\u{7e}", "\\x1f \u{7e}"),
        ];
        for (input, want) in table {
            assert_eq!(visible(input), *want, "{input:?}");
            assert_eq!(Visible(input).to_string(), *want, "{input:?}");
            assert_eq!(has_control(input), input != want, "{input:?}");
        }
    }

    #[test]
    fn text_without_controls_is_borrowed() {
        for s in ["", "hello", "ünïcödé \u{a0}", "SPLN1 x;"] {
            assert!(matches!(visible(s), Cow::Borrowed(_)), "{s:?}");
        }
        assert!(matches!(visible("\u{1b}"), Cow::Owned(_)));
    }

    #[test]
    fn every_control_character_disappears() {
        for code in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(code).unwrap();
            let s = format!("a{c}b");
            let v = visible(&s);
            assert!(!v.chars().any(|x| x == c), "{code:#x}: {v:?}");
            assert!(!has_control(&v), "{code:#x}: {v:?}");
        }
    }
}
