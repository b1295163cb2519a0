//! Request body framing (RFC 9112 §6-7): a known length, or the chunked
//! coding decoded incrementally. It frames bodies even when they are only
//! discarded, so the next request on the connection starts at the right
//! byte; anything malformed is an error that closes the connection.

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    Malformed,
    TooLarge,
}

#[derive(Debug)]
pub enum Body {
    Length { left: u64 },
    Chunked(Chunked),
}

impl Body {
    /// Takes body bytes from the front of `input`, handing data to `sink`.
    /// Returns how many bytes were consumed and whether the body is complete.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(usize, bool), BodyError> {
        match self {
            Body::Length { left } => {
                let n = (*left).min(input.len() as u64) as usize;
                sink(&input[..n]);
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Body::Chunked(c) => c.feed(input, sink),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Ext,
    SizeLf,
    Data,
    SizeWs,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    LastLf,
    Done,
}

const MAX_EXT: usize = 4096;
const MAX_TRAILER: usize = 8192;

#[derive(Debug)]
pub struct Chunked {
    state: State,
    size: u64,
    digits: u32,
    left: u64,
    total: u64,
    limit: u64,
    /// Bytes of chunk extension or trailer seen, bounded.
    extra: usize,
}

impl Chunked {
    /// A decoder refusing more than `limit` data bytes in total.
    pub fn new(limit: u64) -> Chunked {
        Chunked {
            state: State::Size,
            size: 0,
            digits: 0,
            left: 0,
            total: 0,
            limit,
            extra: 0,
        }
    }

    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<(usize, bool), BodyError> {
        use State::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            let b = input[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // Leading zeros are fine (1*HEXDIG), within reason;
                        // the value stays under 2^60.
                        self.digits += 1;
                        if self.digits > 64 || self.size >> 56 != 0 {
                            return Err(BodyError::Malformed);
                        }
                        self.size = self.size << 4 | (b as char).to_digit(16).unwrap_or(0) as u64;
                    }
                    b';' if self.digits > 0 => self.state = Ext,
                    b' ' | b'\t' if self.digits > 0 => self.state = SizeWs,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err(BodyError::Malformed),
                },
                // Only whitespace before an extension's ";" (RFC 9112 §7.1.1's
                // BWS): "5 0" is no size a proxy in front would read as 5.
                SizeWs => match b {
                    b' ' | b'\t' => {
                        self.extra += 1;
                        if self.extra > MAX_EXT {
                            return Err(BodyError::Malformed);
                        }
                    }
                    b';' => self.state = Ext,
                    b'\r' => self.state = SizeLf,
                    _ => return Err(BodyError::Malformed),
                },
                Ext => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(BodyError::Malformed),
                    0..=8 | 10..=31 | 127 => return Err(BodyError::Malformed),
                    _ => {
                        self.extra += 1;
                        if self.extra > MAX_EXT {
                            return Err(BodyError::Malformed);
                        }
                    }
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err(BodyError::Malformed);
                    }
                    self.total = self.total.saturating_add(self.size);
                    if self.total > self.limit {
                        return Err(BodyError::TooLarge);
                    }
                    self.extra = 0;
                    if self.size == 0 {
                        self.state = TrailerStart;
                    } else {
                        self.left = self.size;
                        self.state = Data;
                    }
                }
                Data => {
                    let n = self.left.min((input.len() - i) as u64) as usize;
                    sink(&input[i..i + n]);
                    self.left -= n as u64;
                    i += n;
                    if self.left == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err(BodyError::Malformed);
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err(BodyError::Malformed);
                    }
                    self.size = 0;
                    self.digits = 0;
                    self.state = Size;
                }
                TrailerStart => match b {
                    b'\r' => self.state = LastLf,
                    b'\n' => return Err(BodyError::Malformed),
                    _ => {
                        self.bump_trailer()?;
                        self.state = Trailer;
                    }
                },
                Trailer => match b {
                    b'\r' => self.state = TrailerLf,
                    b'\n' => return Err(BodyError::Malformed),
                    _ => self.bump_trailer()?,
                },
                TrailerLf => {
                    if b != b'\n' {
                        return Err(BodyError::Malformed);
                    }
                    self.state = TrailerStart;
                }
                LastLf => {
                    if b != b'\n' {
                        return Err(BodyError::Malformed);
                    }
                    self.state = Done;
                }
                Done => break,
            }
            i += 1;
        }
        Ok((i, self.state == Done))
    }

    fn bump_trailer(&mut self) -> Result<(), BodyError> {
        self.extra += 1;
        if self.extra > MAX_TRAILER {
            Err(BodyError::Malformed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], limit: u64) -> Result<(Vec<u8>, usize), BodyError> {
        let mut c = Chunked::new(limit);
        let mut out = Vec::new();
        // Byte by byte: every state must survive any split.
        let mut used = 0;
        for k in 0..input.len() {
            let (n, done) = c.feed(&input[k..k + 1], &mut |d| out.extend_from_slice(d))?;
            used += n;
            if done {
                return Ok((out, used));
            }
        }
        Err(BodyError::Malformed)
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let msg = b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET";
        let (data, used) = decode(msg, 100).unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(&msg[used..], b"GET");
    }

    #[test]
    fn leading_zeros_in_chunk_sizes() {
        let (data, _) = decode(b"0000000000000003\r\nabc\r\n00\r\n\r\n", 100).unwrap();
        assert_eq!(data, b"abc");
    }

    #[test]
    fn rejects_bad_framing() {
        assert_eq!(decode(b"x\r\n", 100).unwrap_err(), BodyError::Malformed);
        assert_eq!(decode(b"5\nhello\r\n0\r\n\r\n", 100).unwrap_err(), BodyError::Malformed);
        assert_eq!(decode(b"5\r\nhelloXX0\r\n\r\n", 100).unwrap_err(), BodyError::Malformed);
        assert_eq!(
            decode(b"ffffffffffffffffff\r\n", 100).unwrap_err(),
            BodyError::Malformed
        );
        assert_eq!(decode(b"-1\r\n", 100).unwrap_err(), BodyError::Malformed);
        // After the size, whitespace only before an extension.
        assert_eq!(
            decode(b"5 0\r\nhello\r\n0\r\n\r\n", 100).unwrap_err(),
            BodyError::Malformed
        );
        assert_eq!(
            decode(b"5 zz\r\nhello\r\n0\r\n\r\n", 100).unwrap_err(),
            BodyError::Malformed
        );
        assert_eq!(decode(b"5 \t ;a=b\r\nhello\r\n0 \r\n\r\n", 100).unwrap().0, b"hello");
        assert_eq!(
            decode(b"1000000000000000\r\n", 1 << 62).unwrap_err(),
            BodyError::Malformed,
            "2^60 and above"
        );
        assert_eq!(
            decode(&[b"0".repeat(65).as_slice(), b"\r\n"].concat(), 100).unwrap_err(),
            BodyError::Malformed,
            "zero padding is bounded"
        );
        assert_eq!(decode(b"65\r\n", 100).unwrap_err(), BodyError::TooLarge);
    }
}
