//! JSON-lines input (`runwatch simulate`, `runwatch publish`) read one bounded line at a
//! time: a line is a message, so it is bounded by `limits.max_message_bytes`, and a longer
//! one is an error read no further than that bound plus one byte (`/dev/zero` or a binary
//! file fails at once instead of filling memory).

use std::io::{self, BufRead, Read};

/// A line over the bound: the error inside the [`io::Error`] (kind `InvalidData`) that
/// [`BoundedLines::next_line`] returns.
#[derive(Debug, thiserror::Error)]
#[error(
    "line {line}: longer than limits.max_message_bytes ({limit} bytes); stopped there (the lines before it were processed)"
)]
pub struct LineTooLong {
    /// The line's number, from 1.
    pub line: u64,
    /// The bound.
    pub limit: usize,
}

/// Lines of at most `limit` bytes each (the `\n` not counted).
pub struct BoundedLines<R> {
    input: R,
    limit: usize,
    number: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `input`, each at most `limit` bytes.
    pub fn new(input: R, limit: usize) -> BoundedLines<R> {
        BoundedLines {
            input,
            limit,
            number: 0,
            buf: Vec::new(),
        }
    }

    /// The next line (its number from 1, its bytes without the `\n`), `None` at the end of
    /// the input. A line over the bound is an error ([`LineTooLong`]).
    pub fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        self.buf.clear();
        let cap = u64::try_from(self.limit)
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let n = (&mut self.input)
            .take(cap)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number = self.number.saturating_add(1);
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        } else if self.buf.len() > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                LineTooLong {
                    line: self.number,
                    limit: self.limit,
                },
            ));
        }
        Ok(Some((self.number, &self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8], limit: usize) -> Result<Vec<(u64, String)>, String> {
        let mut l = BoundedLines::new(text, limit);
        let mut out = Vec::new();
        loop {
            match l.next_line() {
                Ok(Some((n, b))) => out.push((n, String::from_utf8_lossy(b).into_owned())),
                Ok(None) => return Ok(out),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    #[test]
    fn lines_up_to_the_bound_pass_and_a_longer_one_stops() {
        let ok = lines(b"abcd\n\nefgh", 4).unwrap();
        assert_eq!(
            ok,
            vec![(1, "abcd".into()), (2, String::new()), (3, "efgh".into())]
        );
        let err = lines(b"ab\nabcde\nx\n", 4).unwrap_err();
        assert!(
            err.starts_with("line 2: longer than limits.max_message_bytes (4 bytes)"),
            "{err}"
        );
        let err = lines(b"abcde", 4).unwrap_err();
        assert!(err.starts_with("line 1:"), "{err}");
    }

    #[test]
    fn an_endless_line_is_read_no_further_than_the_bound() {
        let mut zeros = std::io::BufReader::new(std::io::repeat(0));
        let mut l = BoundedLines::new(&mut zeros, 1024);
        assert!(l.next_line().is_err());
        assert!(l.buf.capacity() <= 4096, "{}", l.buf.capacity());
    }
}
