//! Line framing with a hard limit, applied before anything is allocated for a command.

/// The input holds more than the allowed bytes without a line ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {limit} bytes")]
pub struct LineTooLong {
    pub limit: usize,
}

/// Finds the first line in `buf`. Returns the length of the line including its terminator
/// (`\n`, usually preceded by `\r`), `None` if no complete line is there yet, or an error if
/// more than `limit` bytes arrived without a terminator.
pub fn next_line(buf: &[u8], limit: usize) -> Result<Option<usize>, LineTooLong> {
    let window = &buf[..buf.len().min(limit)];
    match memchr_newline(window) {
        Some(pos) => Ok(Some(pos + 1)),
        None if buf.len() >= limit => Err(LineTooLong { limit }),
        None => Ok(None),
    }
}

/// The line's content without its `\r\n` or `\n`.
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crlf_and_lf_lines() {
        assert_eq!(next_line(b"a1 NOOP\r\nrest", 100), Ok(Some(9)));
        assert_eq!(next_line(b"a1 NOOP\nrest", 100), Ok(Some(8)));
        assert_eq!(trim_eol(b"a1 NOOP\r\n"), b"a1 NOOP");
    }

    #[test]
    fn incomplete_until_limit_then_error() {
        assert_eq!(next_line(b"abc", 4), Ok(None));
        assert_eq!(next_line(b"abcd", 4), Err(LineTooLong { limit: 4 }));
        assert_eq!(next_line(b"abc\n", 4), Ok(Some(4)));
    }
}
