//! FastCGI 1.0 (the Open Market specification, 1996): records and
//! name-value pairs, encoded into and decoded from byte slices. No I/O:
//! the caller reads and writes sockets; this crate only says what the
//! bytes mean. Decoding never panics and never allocates.

/// The protocol version every record carries.
pub const VERSION: u8 = 1;
/// Header length of every record.
pub const HEADER_LEN: usize = 8;
/// Largest content of one record.
pub const MAX_CONTENT: usize = 0xffff;
/// The request id of management records (GET_VALUES and friends).
pub const NULL_REQUEST_ID: u16 = 0;

/// Record types (spec §8).
pub mod kind {
    pub const BEGIN_REQUEST: u8 = 1;
    pub const ABORT_REQUEST: u8 = 2;
    pub const END_REQUEST: u8 = 3;
    pub const PARAMS: u8 = 4;
    pub const STDIN: u8 = 5;
    pub const STDOUT: u8 = 6;
    pub const STDERR: u8 = 7;
    pub const DATA: u8 = 8;
    pub const GET_VALUES: u8 = 9;
    pub const GET_VALUES_RESULT: u8 = 10;
    pub const UNKNOWN_TYPE: u8 = 11;
}

/// Roles of BEGIN_REQUEST (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Responder,
    Authorizer,
    Filter,
    /// A value the spec does not define (answer END_REQUEST UNKNOWN_ROLE).
    Other(u16),
}

impl Role {
    pub fn code(self) -> u16 {
        match self {
            Role::Responder => 1,
            Role::Authorizer => 2,
            Role::Filter => 3,
            Role::Other(n) => n,
        }
    }

    pub fn from_code(n: u16) -> Role {
        match n {
            1 => Role::Responder,
            2 => Role::Authorizer,
            3 => Role::Filter,
            n => Role::Other(n),
        }
    }
}

/// `protocolStatus` of END_REQUEST (spec §5.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolStatus {
    RequestComplete,
    CantMpxConn,
    Overloaded,
    UnknownRole,
    Other(u8),
}

impl ProtocolStatus {
    pub fn code(self) -> u8 {
        match self {
            ProtocolStatus::RequestComplete => 0,
            ProtocolStatus::CantMpxConn => 1,
            ProtocolStatus::Overloaded => 2,
            ProtocolStatus::UnknownRole => 3,
            ProtocolStatus::Other(n) => n,
        }
    }

    pub fn from_code(n: u8) -> ProtocolStatus {
        match n {
            0 => ProtocolStatus::RequestComplete,
            1 => ProtocolStatus::CantMpxConn,
            2 => ProtocolStatus::Overloaded,
            3 => ProtocolStatus::UnknownRole,
            n => ProtocolStatus::Other(n),
        }
    }
}

/// One decoded record; stream contents borrow from the decoded buffer.
/// An empty stream record (`data` empty) ends its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    BeginRequest {
        id: u16,
        role: Role,
        keep_conn: bool,
    },
    AbortRequest {
        id: u16,
    },
    EndRequest {
        id: u16,
        app_status: u32,
        protocol_status: ProtocolStatus,
    },
    Params {
        id: u16,
        data: &'a [u8],
    },
    Stdin {
        id: u16,
        data: &'a [u8],
    },
    Stdout {
        id: u16,
        data: &'a [u8],
    },
    Stderr {
        id: u16,
        data: &'a [u8],
    },
    Data {
        id: u16,
        data: &'a [u8],
    },
    /// Name-value pairs whose values are empty: the variables asked for.
    GetValues {
        data: &'a [u8],
    },
    GetValuesResult {
        data: &'a [u8],
    },
    /// The peer did not understand a record of type `kind`.
    UnknownType {
        kind: u8,
    },
    /// A type this version does not define: a responder answers with
    /// [`unknown_type`] (spec §4.2) rather than failing.
    Unknown {
        kind: u8,
        id: u16,
        data: &'a [u8],
    },
}

/// Malformed input. After one, the connection's framing is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The version byte is not 1.
    Version(u8),
    /// A fixed-size record (BEGIN_REQUEST, END_REQUEST, UNKNOWN_TYPE,
    /// ABORT_REQUEST) with the wrong content length.
    Length { kind: u8, len: u16 },
    /// A management record with a request id, or an application record without one.
    RequestId { kind: u8, id: u16 },
    /// A name-value pair whose lengths run past the end of the body.
    Pair,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Version(v) => write!(f, "FastCGI version {v}, expected 1"),
            Error::Length { kind, len } => write!(f, "record type {kind} with a content length of {len}"),
            Error::RequestId { kind, id } => write!(f, "record type {kind} with request id {id}"),
            Error::Pair => write!(f, "a name-value pair runs past the end of its record"),
        }
    }
}

impl std::error::Error for Error {}

/// The first complete record of `buf` and the bytes it took (header,
/// content and padding); `Ok(None)` while `buf` holds less than a record.
pub fn decode(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, Error> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(Error::Version(buf[0]));
    }
    let kind = buf[1];
    let id = u16::from_be_bytes([buf[2], buf[3]]);
    let len = u16::from_be_bytes([buf[4], buf[5]]);
    let total = HEADER_LEN + len as usize + buf[6] as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let c = &buf[HEADER_LEN..HEADER_LEN + len as usize];
    let fixed = |want: u16| {
        if len == want {
            Ok(())
        } else {
            Err(Error::Length { kind, len })
        }
    };
    let app = |ok: bool| if ok { Ok(()) } else { Err(Error::RequestId { kind, id }) };
    let rec = match kind {
        kind::BEGIN_REQUEST => {
            fixed(8)?;
            app(id != NULL_REQUEST_ID)?;
            Record::BeginRequest {
                id,
                role: Role::from_code(u16::from_be_bytes([c[0], c[1]])),
                keep_conn: c[2] & 1 == 1,
            }
        }
        kind::ABORT_REQUEST => {
            fixed(0)?;
            app(id != NULL_REQUEST_ID)?;
            Record::AbortRequest { id }
        }
        kind::END_REQUEST => {
            fixed(8)?;
            app(id != NULL_REQUEST_ID)?;
            Record::EndRequest {
                id,
                app_status: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                protocol_status: ProtocolStatus::from_code(c[4]),
            }
        }
        kind::PARAMS => Record::Params { id, data: c },
        kind::STDIN => Record::Stdin { id, data: c },
        kind::STDOUT => Record::Stdout { id, data: c },
        kind::STDERR => Record::Stderr { id, data: c },
        kind::DATA => Record::Data { id, data: c },
        kind::GET_VALUES => {
            app(id == NULL_REQUEST_ID)?;
            Record::GetValues { data: c }
        }
        kind::GET_VALUES_RESULT => {
            app(id == NULL_REQUEST_ID)?;
            Record::GetValuesResult { data: c }
        }
        kind::UNKNOWN_TYPE => {
            fixed(8)?;
            app(id == NULL_REQUEST_ID)?;
            Record::UnknownType { kind: c[0] }
        }
        other => Record::Unknown {
            kind: other,
            id,
            data: c,
        },
    };
    if matches!(
        kind,
        kind::PARAMS | kind::STDIN | kind::STDOUT | kind::STDERR | kind::DATA
    ) {
        app(id != NULL_REQUEST_ID)?;
    }
    Ok(Some((rec, total)))
}

/// Appends one record; `content` must be at most [`MAX_CONTENT`] bytes.
/// Padding brings the record to a multiple of 8 bytes (spec §3.3: "we
/// recommend").
fn record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    debug_assert!(content.len() <= MAX_CONTENT);
    let len = content.len() as u16;
    let pad = (8 - content.len() % 8) % 8;
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[pad as u8, 0]);
    out.extend_from_slice(content);
    out.extend_from_slice(&[0u8; 7][..pad]);
}

pub fn begin_request(out: &mut Vec<u8>, id: u16, role: Role, keep_conn: bool) {
    let r = role.code().to_be_bytes();
    record(
        out,
        kind::BEGIN_REQUEST,
        id,
        &[r[0], r[1], keep_conn as u8, 0, 0, 0, 0, 0],
    );
}

pub fn abort_request(out: &mut Vec<u8>, id: u16) {
    record(out, kind::ABORT_REQUEST, id, &[]);
}

pub fn end_request(out: &mut Vec<u8>, id: u16, app_status: u32, status: ProtocolStatus) {
    let a = app_status.to_be_bytes();
    record(
        out,
        kind::END_REQUEST,
        id,
        &[a[0], a[1], a[2], a[3], status.code(), 0, 0, 0],
    );
}

pub fn unknown_type(out: &mut Vec<u8>, unknown: u8) {
    record(
        out,
        kind::UNKNOWN_TYPE,
        NULL_REQUEST_ID,
        &[unknown, 0, 0, 0, 0, 0, 0, 0],
    );
}

/// Appends `data` as records of stream `kind` (PARAMS, STDIN, STDOUT,
/// STDERR, DATA) without ending the stream; empty `data` appends nothing.
pub fn stream(out: &mut Vec<u8>, kind: u8, id: u16, data: &[u8]) {
    for piece in data.chunks(MAX_CONTENT) {
        record(out, kind, id, piece);
    }
}

/// Appends encoded name-value pairs as PARAMS records (without the end),
/// never splitting a pair between records when it fits in one: peers such
/// as PHP decode each PARAMS record on its own. A pair larger than a record
/// is split (the specification allows it); malformed bytes go as
/// [`stream`] would send them.
pub fn params(out: &mut Vec<u8>, id: u16, pairs: &[u8]) {
    let mut start = 0;
    let mut at = 0;
    while at < pairs.len() {
        let mut b = &pairs[at..];
        let size = (|| {
            let n = take_len(&mut b)?;
            let v = take_len(&mut b)?;
            let head = pairs.len() - at - b.len();
            head.checked_add(n)?.checked_add(v).filter(|&t| at + t <= pairs.len())
        })();
        let Some(size) = size else {
            // Not pairs after all: the rest as it is.
            stream(out, kind::PARAMS, id, &pairs[start..]);
            return;
        };
        if at + size - start > MAX_CONTENT && at > start {
            stream(out, kind::PARAMS, id, &pairs[start..at]);
            start = at;
        }
        at += size;
        if at - start >= MAX_CONTENT {
            // One pair as large as a record or more: split it.
            stream(out, kind::PARAMS, id, &pairs[start..at]);
            start = at;
        }
    }
    stream(out, kind::PARAMS, id, &pairs[start..]);
}

/// Ends stream `kind` with its empty record.
pub fn end_stream(out: &mut Vec<u8>, kind: u8, id: u16) {
    record(out, kind, id, &[]);
}

pub fn get_values(out: &mut Vec<u8>, names: &[&str]) {
    let mut body = Vec::new();
    for n in names {
        encode_pair(&mut body, n.as_bytes(), b"");
    }
    stream(out, kind::GET_VALUES, NULL_REQUEST_ID, &body);
}

pub fn get_values_result(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    let mut body = Vec::new();
    for (n, v) in pairs {
        encode_pair(&mut body, n.as_bytes(), v.as_bytes());
    }
    stream(out, kind::GET_VALUES_RESULT, NULL_REQUEST_ID, &body);
}

fn encode_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes());
    }
}

/// Appends one name-value pair (spec §3.4): lengths below 128 in one byte,
/// others in four with the top bit set.
pub fn encode_pair(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    encode_len(out, name.len());
    encode_len(out, value.len());
    out.extend_from_slice(name);
    out.extend_from_slice(value);
}

/// The name-value pairs of a complete PARAMS (or GET_VALUES) body.
pub struct Pairs<'a> {
    rest: &'a [u8],
}

impl<'a> Pairs<'a> {
    pub fn new(body: &'a [u8]) -> Pairs<'a> {
        Pairs { rest: body }
    }
}

fn take_len(b: &mut &[u8]) -> Option<usize> {
    let first = *b.first()?;
    if first < 0x80 {
        *b = &b[1..];
        return Some(first as usize);
    }
    let four: [u8; 4] = b.get(..4)?.try_into().ok()?;
    *b = &b[4..];
    Some((u32::from_be_bytes(four) & 0x7fff_ffff) as usize)
}

impl<'a> Iterator for Pairs<'a> {
    type Item = Result<(&'a [u8], &'a [u8]), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let mut b = self.rest;
        let parsed = (|| {
            let n = take_len(&mut b)?;
            let v = take_len(&mut b)?;
            let end = n.checked_add(v)?;
            let (name, value) = (b.get(..n)?, b.get(n..end)?);
            Some((name, value, &b[end..]))
        })();
        match parsed {
            Some((name, value, rest)) => {
                self.rest = rest;
                Some(Ok((name, value)))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::Pair))
            }
        }
    }
}

#[cfg(test)]
mod tests;
