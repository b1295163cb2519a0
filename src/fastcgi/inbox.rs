//! What an application sent and the web server has not handled yet:
//! bytes go in as the socket gives them, whole records come out from the
//! front, whatever the split. The buffer grows to fit the largest record
//! (at most 64 KiB of content and 255 of padding).

use std::ops::Range;

use fastcgi_codec::{self as codec, ProtocolStatus, Record};

/// First size of the buffer.
const START: usize = 32 << 10;

#[derive(Default)]
pub struct Inbox {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A record, with its content as a range of [`Inbox::bytes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// STDOUT content of request `id` (empty: the stream's end).
    Stdout(u16, Range<usize>),
    Stderr(u16, Range<usize>),
    End(u16, ProtocolStatus),
    /// Anything a client has no use for (management records, other types).
    Other,
}

impl Inbox {
    /// An inbox reading into `buf` (a buffer of an earlier one, or empty).
    pub fn with_buffer(buf: Vec<u8>) -> Inbox {
        Inbox { buf, start: 0, end: 0 }
    }

    /// Gives the buffer back for another inbox, when it has the usual size.
    pub fn into_buffer(self) -> Option<Vec<u8>> {
        (self.buf.len() == START).then_some(self.buf)
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Room to read into: unread bytes move to the front, and the buffer
    /// grows when the record at its head is larger than it.
    pub fn room(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; START];
        }
        if self.start == self.end {
            self.clear();
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end >= codec::HEADER_LEN {
            let h = &self.buf[..codec::HEADER_LEN];
            let need = codec::HEADER_LEN + u16::from_be_bytes([h[4], h[5]]) as usize + h[6] as usize;
            if need > self.buf.len() {
                self.buf.resize(need, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// `n` bytes were read into [`Inbox::room`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole record, if one is here.
    pub fn take(&mut self) -> Result<Option<Item>, codec::Error> {
        let avail = &self.buf[self.start..self.end];
        let Some((rec, used)) = codec::decode(avail)? else {
            return Ok(None);
        };
        let at = |data: &[u8]| {
            let from = data.as_ptr() as usize - avail.as_ptr() as usize + self.start;
            from..from + data.len()
        };
        let item = match rec {
            Record::Stdout { id, data } => Item::Stdout(id, at(data)),
            Record::Stderr { id, data } => Item::Stderr(id, at(data)),
            Record::EndRequest {
                id, protocol_status, ..
            } => Item::End(id, protocol_status),
            _ => Item::Other,
        };
        self.start += used;
        Ok(Some(item))
    }

    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_any_split() {
        let mut stream = Vec::new();
        codec::stream(&mut stream, codec::kind::STDOUT, 1, &vec![b'x'; 70_000]);
        codec::stream(&mut stream, codec::kind::STDERR, 1, b"oops\n");
        codec::end_stream(&mut stream, codec::kind::STDOUT, 1);
        codec::end_request(&mut stream, 1, 0, ProtocolStatus::RequestComplete);
        for piece in [1, 7, 4096, 100_000] {
            let mut inbox = Inbox::default();
            let (mut out, mut err, mut ended) = (0, Vec::new(), false);
            for chunk in stream.chunks(piece) {
                let mut rest = chunk;
                while !rest.is_empty() {
                    let room = inbox.room();
                    let n = room.len().min(rest.len());
                    room[..n].copy_from_slice(&rest[..n]);
                    inbox.filled(n);
                    rest = &rest[n..];
                    while let Some(item) = inbox.take().unwrap() {
                        match item {
                            Item::Stdout(1, r) => out += r.len(),
                            Item::Stderr(1, r) => err.extend_from_slice(inbox.bytes(r)),
                            Item::End(1, ProtocolStatus::RequestComplete) => ended = true,
                            other => panic!("{other:?}"),
                        }
                    }
                }
            }
            assert_eq!(
                (out, err.as_slice(), ended),
                (70_000, &b"oops\n"[..], true),
                "pieces of {piece}"
            );
            assert!(inbox.is_empty());
        }
    }
}
