//! Decoding a `Transfer-Encoding: chunked` body (RFC 9112 7.1) as it
//! arrives: chunk data is handed on as it is read, never buffered whole.
//! Extensions and trailer fields are read past and dropped, within caps: a
//! size line (size and extensions) of at most [`MAX_SIZE_LINE`] bytes, and
//! a trailer section of at most [`TrailerLimits`].

use std::io::Write;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// A chunk size of more than this many hex digits cannot be meant.
const MAX_SIZE_DIGITS: u8 = 15;

/// The longest chunk size line (size and extensions, without its CRLF).
pub(crate) const MAX_SIZE_LINE: u32 = 4096;

/// The most trailer bytes and lines a body may end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TrailerLimits {
    /// Bytes of the trailer section, line endings included.
    pub(crate) max_bytes: usize,
    pub(crate) max_lines: usize,
}

impl Default for TrailerLimits {
    /// For upstream responses: those of a response head.
    fn default() -> Self {
        TrailerLimits {
            max_bytes: 64 * 1024,
            max_lines: super::response::MAX_HEADERS,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    Size,
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    #[error("invalid trailer section")]
    Trailer,
    #[error("chunk size line longer than {MAX_SIZE_LINE} bytes")]
    SizeLineTooLong,
    #[error("trailer section larger than allowed")]
    TrailerTooLarge,
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// The buffer is used up: read more, then call again.
    NeedMore,
    /// The last chunk and the trailer section were read.
    End,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Hex digits of the chunk size; `digits` read so far.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size: more of it, `;` or CR may follow.
    SizeSpace {
        size: u64,
    },
    /// After the size: `;extensions` up to CR.
    Extension {
        size: u64,
    },
    /// The LF ending the size line.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// The LF of a trailer line (`done`: it was the empty, final line).
    TrailerLf {
        done: bool,
    },
    End,
}

/// The state of one chunked body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Bytes of the current size line, or of the trailer section so far.
    line_bytes: u32,
    /// Trailer lines so far.
    trailer_lines: u32,
    limits: TrailerLimits,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder with the default [`TrailerLimits`] (a response body's).
    pub fn new() -> Decoder {
        Decoder::with_limits(TrailerLimits::default())
    }

    pub(crate) fn with_limits(limits: TrailerLimits) -> Decoder {
        Decoder {
            state: State::Size { size: 0, digits: 0 },
            line_bytes: 0,
            trailer_lines: 0,
            limits,
        }
    }

    /// Consumes framing from the front of `buf` and returns the next piece
    /// of body data, or what is needed next. Data is split off `buf`
    /// without copying.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, ChunkError> {
        loop {
            if let State::Data { left } = self.state {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                return Ok(Step::Data(buf.split_to(n).freeze()));
            }
            if self.state == State::End {
                return Ok(Step::End);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Step::NeedMore);
            };
            buf.advance(1);
            self.count(byte)?;
            self.state = self.next(byte)?;
        }
    }

    /// Counts a framing byte against the caps of the line it is part of.
    fn count(&mut self, byte: u8) -> Result<(), ChunkError> {
        match self.state {
            State::Size { .. } | State::Extension { .. } if byte != b'\r' => {
                self.line_bytes += 1;
                if self.line_bytes > MAX_SIZE_LINE {
                    return Err(ChunkError::SizeLineTooLong);
                }
            }
            State::TrailerStart | State::TrailerLine | State::TrailerLf { .. } => {
                if self.state == State::TrailerStart && byte != b'\r' {
                    self.trailer_lines += 1;
                    if self.trailer_lines as usize > self.limits.max_lines {
                        return Err(ChunkError::TrailerTooLarge);
                    }
                }
                self.line_bytes += 1;
                if self.line_bytes as usize > self.limits.max_bytes {
                    return Err(ChunkError::TrailerTooLarge);
                }
            }
            // The size line ends; the trailer section starts from zero.
            State::SizeLf { .. } => self.line_bytes = 0,
            _ => {}
        }
        Ok(())
    }

    /// The state after one framing byte.
    fn next(&self, byte: u8) -> Result<State, ChunkError> {
        Ok(match self.state {
            State::Size { size, digits } => match (byte as char).to_digit(16) {
                Some(d) if digits < MAX_SIZE_DIGITS => State::Size {
                    size: size * 16 + u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(ChunkError::Size),
                None if digits == 0 => return Err(ChunkError::Size),
                None => match byte {
                    b'\r' => State::SizeLf { size },
                    b';' => State::Extension { size },
                    b' ' | b'\t' => State::SizeSpace { size },
                    _ => return Err(ChunkError::Size),
                },
            },
            // `5 x`, `0 1`: not a size any reading agrees on.
            State::SizeSpace { size } => match byte {
                b'\r' => State::SizeLf { size },
                b';' => State::Extension { size },
                b' ' | b'\t' => State::SizeSpace { size },
                _ => return Err(ChunkError::Size),
            },
            State::Extension { size } => match byte {
                b'\r' => State::SizeLf { size },
                b'\n' => return Err(ChunkError::Size),
                _ => State::Extension { size },
            },
            State::SizeLf { size } => match (byte, size) {
                (b'\n', 0) => State::TrailerStart,
                (b'\n', left) => State::Data { left },
                _ => return Err(ChunkError::Size),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                _ => return Err(ChunkError::DataEnd),
            },
            State::DataLf => match byte {
                b'\n' => State::Size { size: 0, digits: 0 },
                _ => return Err(ChunkError::DataEnd),
            },
            State::TrailerStart => match byte {
                b'\r' => State::TrailerLf { done: true },
                b'\n' => return Err(ChunkError::Trailer),
                _ => State::TrailerLine,
            },
            State::TrailerLine => match byte {
                b'\r' => State::TrailerLf { done: false },
                b'\n' => return Err(ChunkError::Trailer),
                _ => State::TrailerLine,
            },
            State::TrailerLf { done } => match (byte, done) {
                (b'\n', true) => State::End,
                (b'\n', false) => State::TrailerStart,
                _ => return Err(ChunkError::Trailer),
            },
            // `decode` handles these before it reads a framing byte.
            state @ (State::Data { .. } | State::End) => state,
        })
    }
}

/// Writes the size line of a chunk of `len` bytes.
pub(crate) fn encode_chunk_header(buf: &mut Vec<u8>, len: usize) {
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "{len:x}\r\n");
}

/// Writes one chunk of a chunked body into `buf`.
#[cfg(test)]
pub(crate) fn encode_chunk(buf: &mut Vec<u8>, data: &[u8]) {
    encode_chunk_header(buf, data.len());
    buf.extend_from_slice(data);
    buf.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `step` bytes; returns the body and
    /// whether the end was reached.
    fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf)? {
                    Step::Data(data) => body.extend_from_slice(&data),
                    Step::NeedMore => break,
                    Step::End => return Ok((body, true)),
                }
            }
        }
        Ok((body, false))
    }

    #[test]
    fn decodes_chunks_in_any_split() {
        let input = b"5\r\nhello\r\n1 ;ext=1\r\n \r\nA \r\n0123456789\r\n0\r\n\r\n";
        for step in 1..input.len() {
            let (body, ended) = decode_in_steps(input, step).unwrap();
            assert_eq!(body, b"hello 0123456789", "step {step}");
            assert!(ended, "step {step}");
        }
    }

    #[test]
    fn reads_past_trailers_and_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\nX-Sum: 1\r\nX-B: 2\r\n\r\nHTTP/1.1"[..]);
        let mut decoder = Decoder::new();
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Step::End);
        assert_eq!(
            &buf[..],
            b"HTTP/1.1",
            "the next response stays in the buffer"
        );
    }

    #[test]
    fn an_unfinished_body_needs_more() {
        let (body, ended) = decode_in_steps(b"5\r\nhel", 100).unwrap();
        assert_eq!(body, b"hel");
        assert!(!ended);
    }

    #[test]
    fn rejects_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"-1\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"1 x\r\nx\r\n0\r\n\r\n",
            b"0 1\r\n\r\n",
            b"0\r\nX: 1\n\r\n",
            b"0\r\n\n",
        ] {
            assert!(
                decode_in_steps(bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_size_line_is_capped_extensions_included() {
        let line = |ext: usize| format!("1;e={}\r\nx\r\n0\r\n\r\n", "a".repeat(ext));
        // `1;e=` is 4 bytes: 4092 more make a 4096-byte line.
        let (body, ended) = decode_in_steps(line(4092).as_bytes(), 1000).unwrap();
        assert_eq!((&body[..], ended), (&b"x"[..], true));
        assert_eq!(
            decode_in_steps(line(4093).as_bytes(), 1000).unwrap_err(),
            ChunkError::SizeLineTooLong
        );
        let second = format!("1\r\nx\r\n1;{}\r\ny\r\n0\r\n\r\n", "a".repeat(5000));
        assert_eq!(
            decode_in_steps(second.as_bytes(), 7).unwrap_err(),
            ChunkError::SizeLineTooLong
        );
    }

    #[test]
    fn trailers_are_capped_in_bytes_and_lines() {
        let decode = |input: &str, limits| {
            let mut decoder = Decoder::with_limits(limits);
            let mut buf = BytesMut::from(input.as_bytes());
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Step::End) => return Ok(()),
                    Ok(Step::NeedMore) => panic!("incomplete"),
                    Ok(Step::Data(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        };
        let limits = TrailerLimits {
            max_bytes: 20,
            max_lines: 2,
        };
        // `A: 1\r\nB: 2\r\n\r\n` is 14 bytes, two lines.
        assert_eq!(decode("0\r\nA: 1\r\nB: 2\r\n\r\n", limits), Ok(()));
        assert_eq!(
            decode("0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits),
            Err(ChunkError::TrailerTooLarge)
        );
        assert_eq!(
            decode("1\r\nx\r\n0\r\nA: 123456789012345678\r\n\r\n", limits),
            Err(ChunkError::TrailerTooLarge)
        );
        // A long size line before does not count against the trailers.
        let ext = format!("0;{}\r\nA: 1\r\n\r\n", "e".repeat(100));
        assert_eq!(decode(&ext, limits), Ok(()));
    }

    #[test]
    fn chunks_are_framed_with_hex_sizes() {
        let mut buf = Vec::new();
        encode_chunk(&mut buf, &[b'x'; 26]);
        buf.extend_from_slice(LAST_CHUNK);
        let mut expected = b"1a\r\n".to_vec();
        expected.extend_from_slice(&[b'x'; 26]);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(buf, expected);
    }
}
