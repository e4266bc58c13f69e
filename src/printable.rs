//! Text from inputs made safe to print: every control character (C0, DEL, C1: ESC, CR, LF,
//! TAB, ...) is written as a Rust escape (`\n`, `\r`, `\t`, `\u{1b}`), so a value can neither
//! start a new log line nor send a terminal an escape sequence. The decoder refuses control
//! characters in identifiers (`event::check_no_controls`); this covers what was stored
//! before it did, rejection details that quote a hostile value, and every text log field
//! (`telemetry`).

use std::borrow::Cow;
use std::fmt::{self, Write};

/// `s` with each control character escaped; borrowed when there is none.
pub fn escape_controls(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, s);
    Cow::Owned(out)
}

/// Writes `s` to `w` with each control character escaped.
pub fn write_escaped(w: &mut dyn Write, s: &str) -> fmt::Result {
    for c in s.chars() {
        if c.is_control() {
            write!(w, "{}", c.escape_debug())?;
        } else {
            w.write_char(c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_everything_else_kept() {
        assert!(matches!(escape_controls("octo/repo é"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("a\r\nb\u{1b}[31mc\td\u{7f}e\u{85}f"),
            "a\\r\\nb\\u{1b}[31mc\\td\\u{7f}e\\u{85}f"
        );
        assert!(
            !escape_controls("\u{0}\u{1f}\u{9b}")
                .chars()
                .any(char::is_control)
        );
    }
}
