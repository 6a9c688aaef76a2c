//! The codec's building blocks: the `Decode`/`Encode` traits, their errors, and the primitive
//! readers and writers the generated messages are made of.
//!
//! Every reader takes `&mut Bytes` and advances it. **No reader allocates from a wire count
//! larger than the bytes that remain**: lengths are checked against `buf.len()` before
//! anything is reserved, so a tiny frame that claims a billion elements fails cleanly.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::Uuid;

/// Why bytes could not be decoded into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unexpected end of input: need {need} bytes, have {have}")]
    UnexpectedEof { need: usize, have: usize },
    #[error("invalid length {len} for {what}")]
    InvalidLength { what: &'static str, len: i64 },
    #[error("invalid UTF-8 in string")]
    InvalidUtf8,
    #[error("unsupported version {version} for api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    /// The request header named an unknown api key or a version out of range. The ids are kept
    /// so the broker can still answer (or log) with the right correlation id.
    #[error(
        "unsupported request: api key {api_key} version {api_version} (correlation id {correlation_id})"
    )]
    UnsupportedRequest {
        api_key: i16,
        api_version: i16,
        correlation_id: i32,
    },
    #[error("null value for non-nullable field {field}")]
    NullNotAllowed { field: &'static str },
    #[error("variable-length integer is too long")]
    VarIntTooLong,
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    #[error("trailing bytes after {what}")]
    TrailingBytes { what: &'static str },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("null value for field {field}, which is not nullable in this version")]
    NullNotAllowed { field: &'static str },
    #[error("{what} is too long: {len}")]
    TooLong { what: &'static str, len: usize },
    #[error("unsupported version {version} for api key {api_key}")]
    UnsupportedVersion { api_key: i16, version: i16 },
    #[error("body is for api key {actual}, expected {expected}")]
    ApiKeyMismatch { expected: i16, actual: i16 },
    #[error("{given} spliced record lengths given for {fields} records fields")]
    SpliceMismatch { given: usize, fields: usize },
}

/// A value that can be read from the wire at a given message version.
pub trait Decode: Sized {
    /// Decodes a value from the front of `buf`, advancing it past the bytes consumed.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;
}

/// A value that can be written to the wire at a given message version.
pub trait Encode {
    /// Appends the encoding of `self` at `version` to `buf`.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;

    /// The number of bytes `encode` would write (0 if encoding fails). Computed by encoding.
    fn encoded_len(&self, version: i16) -> usize {
        let mut scratch = BytesMut::new();
        match self.encode(&mut scratch, version) {
            Ok(()) => scratch.len(),
            Err(_) => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed-width primitives.

#[inline]
fn need(buf: &Bytes, n: usize) -> Result<(), DecodeError> {
    if buf.len() < n {
        Err(DecodeError::UnexpectedEof {
            need: n,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

macro_rules! fixed {
    ($get:ident, $put:ident, $ty:ty, $n:expr, $buf_get:ident, $buf_put:ident) => {
        #[doc = concat!("Reads a big-endian `", stringify!($ty), "`.")]
        #[inline]
        pub fn $get(buf: &mut Bytes) -> Result<$ty, DecodeError> {
            need(buf, $n)?;
            Ok(buf.$buf_get())
        }
        #[doc = concat!("Writes a big-endian `", stringify!($ty), "`.")]
        #[inline]
        pub fn $put(buf: &mut BytesMut, value: $ty) {
            buf.$buf_put(value);
        }
    };
}

fixed!(get_i8, put_i8, i8, 1, get_i8, put_i8);
fixed!(get_i16, put_i16, i16, 2, get_i16, put_i16);
fixed!(get_i32, put_i32, i32, 4, get_i32, put_i32);
fixed!(get_i64, put_i64, i64, 8, get_i64, put_i64);
fixed!(get_u16, put_u16, u16, 2, get_u16, put_u16);
fixed!(get_u32, put_u32, u32, 4, get_u32, put_u32);
fixed!(get_f64, put_f64, f64, 8, get_f64, put_f64);

/// Reads a boolean (any non-zero byte is true, as in Kafka).
#[inline]
pub fn get_bool(buf: &mut Bytes) -> Result<bool, DecodeError> {
    Ok(get_i8(buf)? != 0)
}

/// Writes a boolean as one byte.
#[inline]
pub fn put_bool(buf: &mut BytesMut, value: bool) {
    buf.put_u8(u8::from(value));
}

/// Reads a 16-byte UUID.
#[inline]
pub fn get_uuid(buf: &mut Bytes) -> Result<Uuid, DecodeError> {
    need(buf, 16)?;
    let mut raw = [0u8; 16];
    buf.copy_to_slice(&mut raw);
    Ok(Uuid(raw))
}

/// Writes a 16-byte UUID.
#[inline]
pub fn put_uuid(buf: &mut BytesMut, value: Uuid) {
    buf.put_slice(&value.0);
}

// ---------------------------------------------------------------------------------------------
// Variable-length integers.

/// Reads an unsigned varint (at most 5 bytes, fitting in 32 bits).
pub fn get_uvarint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        need(buf, 1)?;
        let byte = buf.get_u8();
        if i == 4 && byte > 0x0f {
            return Err(DecodeError::VarIntTooLong);
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Writes an unsigned varint.
pub fn put_uvarint(buf: &mut BytesMut, mut value: u32) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Reads an unsigned varlong (at most 10 bytes, fitting in 64 bits).
pub fn get_uvarlong(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        need(buf, 1)?;
        let byte = buf.get_u8();
        if i == 9 && byte > 0x01 {
            return Err(DecodeError::VarIntTooLong);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::VarIntTooLong)
}

/// Writes an unsigned varlong.
pub fn put_uvarlong(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Reads a zigzag-encoded signed varint.
pub fn get_varint(buf: &mut Bytes) -> Result<i32, DecodeError> {
    let raw = get_uvarint(buf)?;
    Ok(((raw >> 1) as i32) ^ -((raw & 1) as i32))
}

/// Writes a zigzag-encoded signed varint.
pub fn put_varint(buf: &mut BytesMut, value: i32) {
    put_uvarint(buf, ((value << 1) ^ (value >> 31)) as u32);
}

/// Reads a zigzag-encoded signed varlong.
pub fn get_varlong(buf: &mut Bytes) -> Result<i64, DecodeError> {
    let raw = get_uvarlong(buf)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

/// Writes a zigzag-encoded signed varlong.
pub fn put_varlong(buf: &mut BytesMut, value: i64) {
    put_uvarlong(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// Returns the first `len` bytes of `buf` (zero-copy), advancing it.
pub fn take(buf: &mut Bytes, len: usize, what: &'static str) -> Result<Bytes, DecodeError> {
    if len > buf.len() {
        return Err(DecodeError::InvalidLength {
            what,
            len: len as i64,
        });
    }
    Ok(buf.split_to(len))
}

// ---------------------------------------------------------------------------------------------
// Lengths: compact (uvarint, length + 1, 0 = null) in flexible versions, else fixed width.

/// Reads a length prefix; `None` is null. Checks that at least `len * min_elem_len` bytes remain.
fn get_len(
    buf: &mut Bytes,
    flexible: bool,
    wide: bool,
    what: &'static str,
) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if flexible {
        i64::from(get_uvarint(buf)?) - 1
    } else if wide {
        i64::from(get_i32(buf)?)
    } else {
        i64::from(get_i16(buf)?)
    };
    if len == -1 {
        return Ok(None);
    }
    // Every element and every byte takes at least one byte on the wire, so a length beyond what
    // remains is malformed. This is what keeps allocations bounded by the frame size.
    if len < 0 || len > buf.len() as i64 {
        return Err(DecodeError::InvalidLength { what, len });
    }
    Ok(Some(len as usize))
}

fn put_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    flexible: bool,
    wide: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    let Some(len) = len else {
        if flexible {
            put_uvarint(buf, 0);
        } else if wide {
            put_i32(buf, -1);
        } else {
            put_i16(buf, -1);
        }
        return Ok(());
    };
    let too_long = EncodeError::TooLong { what, len };
    if flexible {
        let n = u32::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(1))
            .ok_or(too_long)?;
        put_uvarint(buf, n);
    } else if wide {
        put_i32(buf, i32::try_from(len).map_err(|_| too_long)?);
    } else {
        put_i16(buf, i16::try_from(len).map_err(|_| too_long)?);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strings and bytes.

/// Reads a possibly-null string. A null is an error unless `nullable`.
pub fn get_opt_string(
    buf: &mut Bytes,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<Option<String>, DecodeError> {
    match get_len(buf, flexible, false, field)? {
        None if nullable => Ok(None),
        None => Err(DecodeError::NullNotAllowed { field }),
        Some(len) => {
            let raw = buf.split_to(len);
            match std::str::from_utf8(&raw) {
                Ok(s) => Ok(Some(s.to_owned())),
                Err(_) => Err(DecodeError::InvalidUtf8),
            }
        }
    }
}

/// Reads a non-null string.
pub fn get_string(
    buf: &mut Bytes,
    flexible: bool,
    field: &'static str,
) -> Result<String, DecodeError> {
    get_opt_string(buf, flexible, false, field).map(Option::unwrap_or_default)
}

/// Writes a possibly-null string. A null is an error unless `nullable`.
pub fn put_opt_string(
    buf: &mut BytesMut,
    value: Option<&str>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match value {
        None if !nullable => Err(EncodeError::NullNotAllowed { field }),
        None => put_len(buf, None, flexible, false, field),
        Some(s) => {
            put_len(buf, Some(s.len()), flexible, false, field)?;
            buf.put_slice(s.as_bytes());
            Ok(())
        }
    }
}

/// Writes a non-null string.
pub fn put_string(
    buf: &mut BytesMut,
    value: &str,
    flexible: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_opt_string(buf, Some(value), flexible, false, field)
}

/// Reads possibly-null bytes (zero-copy). A null is an error unless `nullable`.
pub fn get_opt_bytes(
    buf: &mut Bytes,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<Option<Bytes>, DecodeError> {
    match get_len(buf, flexible, true, field)? {
        None if nullable => Ok(None),
        None => Err(DecodeError::NullNotAllowed { field }),
        Some(len) => Ok(Some(buf.split_to(len))),
    }
}

/// Reads non-null bytes (zero-copy).
pub fn get_bytes(
    buf: &mut Bytes,
    flexible: bool,
    field: &'static str,
) -> Result<Bytes, DecodeError> {
    get_opt_bytes(buf, flexible, false, field).map(Option::unwrap_or_default)
}

/// Writes possibly-null bytes. A null is an error unless `nullable`.
pub fn put_opt_bytes(
    buf: &mut BytesMut,
    value: Option<&[u8]>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match value {
        None if !nullable => Err(EncodeError::NullNotAllowed { field }),
        None => put_len(buf, None, flexible, true, field),
        Some(b) => {
            put_len(buf, Some(b.len()), flexible, true, field)?;
            buf.put_slice(b);
            Ok(())
        }
    }
}

/// Writes non-null bytes.
pub fn put_bytes(
    buf: &mut BytesMut,
    value: &[u8],
    flexible: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_opt_bytes(buf, Some(value), flexible, false, field)
}

// ---------------------------------------------------------------------------------------------
// Records, with room for bytes spliced in after encoding.
//
// A Fetch response can carry its records as ranges of segment files that the network layer
// sends with `sendfile(2)`, never copying them through user space. To build such a frame,
// `frame::encode_response_spliced` encodes the body with a list of extra lengths, one per
// `records` field in encoding order: each field's length prefix then counts its extra bytes,
// and the position right after the field's inline bytes is noted, for the caller to insert
// the extra bytes there when writing. The state lives in a thread-local for the duration of
// that one synchronous call, so the generated encoders need no extra parameter.

struct Splicing {
    lens: Vec<usize>,
    next: usize,
    points: Vec<(usize, usize)>,
}

thread_local! {
    static SPLICING: std::cell::RefCell<Option<Splicing>> = const { std::cell::RefCell::new(None) };
}

/// Runs `encode` with splicing on; returns its result and the `(position, length)` of every
/// nonzero extra length, in order. Fails unless every length was consumed by exactly one
/// `records` field.
pub(crate) fn with_splicing<T>(
    lens: Vec<usize>,
    encode: impl FnOnce() -> Result<T, EncodeError>,
) -> Result<(T, Vec<(usize, usize)>), EncodeError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            SPLICING.with(|s| s.borrow_mut().take());
        }
    }
    SPLICING.with(|s| {
        *s.borrow_mut() = Some(Splicing {
            lens,
            next: 0,
            points: Vec::new(),
        })
    });
    let reset = Reset;
    let value = encode()?;
    let state = SPLICING
        .with(|s| s.borrow_mut().take())
        .expect("splicing state set above");
    drop(reset);
    if state.next != state.lens.len() {
        return Err(EncodeError::SpliceMismatch {
            given: state.lens.len(),
            fields: state.next,
        });
    }
    Ok((value, state.points))
}

/// The extra length for the next `records` field: `None` when not splicing.
fn next_splice() -> Result<Option<usize>, EncodeError> {
    SPLICING.with(|s| {
        let mut s = s.borrow_mut();
        let Some(state) = s.as_mut() else {
            return Ok(None);
        };
        let extra = state.lens.get(state.next).copied();
        state.next += 1;
        match extra {
            Some(extra) => Ok(Some(extra)),
            None => Err(EncodeError::SpliceMismatch {
                given: state.lens.len(),
                fields: state.next,
            }),
        }
    })
}

fn note_splice(position: usize, len: usize) {
    SPLICING.with(|s| {
        if let Some(state) = s.borrow_mut().as_mut() {
            state.points.push((position, len));
        }
    });
}

/// Writes a possibly-null `records` field (see the section comment on splicing).
pub fn put_opt_records(
    buf: &mut BytesMut,
    value: Option<&[u8]>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match next_splice()? {
        None | Some(0) => put_opt_bytes(buf, value, flexible, nullable, field),
        Some(extra) => {
            let inline = value.unwrap_or_default();
            put_len(buf, Some(inline.len() + extra), flexible, true, field)?;
            buf.put_slice(inline);
            note_splice(buf.len(), extra);
            Ok(())
        }
    }
}

/// Writes a non-null `records` field (see the section comment on splicing).
pub fn put_records(
    buf: &mut BytesMut,
    value: &[u8],
    flexible: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    put_opt_records(buf, Some(value), flexible, false, field)
}

// ---------------------------------------------------------------------------------------------
// Arrays.

/// The most an array decoder reserves before its elements have decoded.
const MAX_PREALLOC_BYTES: usize = 256 * 1024;

/// Reads a possibly-null array, decoding each element with `elem`. A null is an error unless
/// `nullable`. The count is checked against the bytes that remain, and the up-front reservation
/// is bounded whatever the count says.
pub fn get_opt_array<T>(
    buf: &mut Bytes,
    flexible: bool,
    nullable: bool,
    field: &'static str,
    mut elem: impl FnMut(&mut Bytes) -> Result<T, DecodeError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    match get_len(buf, flexible, true, field)? {
        None if nullable => Ok(None),
        None => Err(DecodeError::NullNotAllowed { field }),
        Some(len) => {
            // `len` is at most the bytes that remain, but an element can be far larger in
            // memory than on the wire, so reserve at most a bounded amount up front and let
            // the vector grow with the elements that actually decode.
            let cap = len.min(MAX_PREALLOC_BYTES / std::mem::size_of::<T>().max(1));
            let mut out = Vec::with_capacity(cap);
            for _ in 0..len {
                out.push(elem(buf)?);
            }
            Ok(Some(out))
        }
    }
}

/// Reads a non-null array.
pub fn get_array<T>(
    buf: &mut Bytes,
    flexible: bool,
    field: &'static str,
    elem: impl FnMut(&mut Bytes) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    get_opt_array(buf, flexible, false, field, elem).map(Option::unwrap_or_default)
}

/// Writes a possibly-null array, encoding each element with `elem`.
pub fn put_opt_array<T>(
    buf: &mut BytesMut,
    value: Option<&[T]>,
    flexible: bool,
    nullable: bool,
    field: &'static str,
    mut elem: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    match value {
        None if !nullable => Err(EncodeError::NullNotAllowed { field }),
        None => put_len(buf, None, flexible, true, field),
        Some(items) => {
            put_len(buf, Some(items.len()), flexible, true, field)?;
            for item in items {
                elem(buf, item)?;
            }
            Ok(())
        }
    }
}

/// Writes a non-null array.
pub fn put_array<T>(
    buf: &mut BytesMut,
    value: &[T],
    flexible: bool,
    field: &'static str,
    elem: impl FnMut(&mut BytesMut, &T) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    put_opt_array(buf, Some(value), flexible, false, field, elem)
}

// ---------------------------------------------------------------------------------------------
// Nullable structs: an int8 marker, -1 for null, 1 for present.

/// Reads a possibly-null struct.
pub fn get_opt_struct<T: Decode>(
    buf: &mut Bytes,
    version: i16,
    nullable: bool,
) -> Result<Option<T>, DecodeError> {
    if nullable && get_i8(buf)? < 0 {
        return Ok(None);
    }
    T::decode(buf, version).map(Some)
}

/// Writes a possibly-null struct.
pub fn put_opt_struct<T: Encode>(
    buf: &mut BytesMut,
    value: Option<&T>,
    version: i16,
    nullable: bool,
    field: &'static str,
) -> Result<(), EncodeError> {
    match value {
        None if !nullable => Err(EncodeError::NullNotAllowed { field }),
        None => {
            put_i8(buf, -1);
            Ok(())
        }
        Some(v) => {
            if nullable {
                put_i8(buf, 1);
            }
            v.encode(buf, version)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tagged fields.

/// Reads the tagged-field section header and calls `field(tag, data)` for each field, where
/// `data` holds exactly the field's bytes.
pub fn get_tagged_fields(
    buf: &mut Bytes,
    mut field: impl FnMut(u32, Bytes) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let count = get_uvarint(buf)?;
    // Each field takes at least two bytes, so this loop is bounded by the input size.
    for _ in 0..count {
        let tag = get_uvarint(buf)?;
        let size = get_uvarint(buf)?;
        let data = take(buf, size as usize, "tagged field")?;
        field(tag, data)?;
    }
    Ok(())
}

/// Fails unless a known tagged field's data was consumed exactly.
pub fn expect_consumed(data: &Bytes) -> Result<(), DecodeError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            what: "tagged field",
        })
    }
}

/// Collects the tagged fields of one struct before they are written.
#[derive(Debug, Default)]
pub struct TaggedFields {
    known: Vec<(u32, Bytes)>,
}

impl TaggedFields {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a known field (tags are pushed in ascending order), encoding it with `write`.
    pub fn push(
        &mut self,
        tag: u32,
        write: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), EncodeError> {
        let mut data = BytesMut::new();
        write(&mut data)?;
        self.known.push((tag, data.freeze()));
        Ok(())
    }

    /// Writes the section: known fields merged with the unknown ones kept from decoding.
    pub fn write(self, buf: &mut BytesMut, unknown: &[(u32, Bytes)]) -> Result<(), EncodeError> {
        let count = self.known.len() + unknown.len();
        let count = u32::try_from(count).map_err(|_| EncodeError::TooLong {
            what: "tagged fields",
            len: count,
        })?;
        put_uvarint(buf, count);
        let mut known = self.known.into_iter().peekable();
        for (tag, data) in unknown {
            while let Some((k, d)) = known.next_if(|(k, _)| k < tag) {
                put_tagged(buf, k, &d)?;
            }
            put_tagged(buf, *tag, data)?;
        }
        for (k, d) in known {
            put_tagged(buf, k, &d)?;
        }
        Ok(())
    }
}

fn put_tagged(buf: &mut BytesMut, tag: u32, data: &[u8]) -> Result<(), EncodeError> {
    put_uvarint(buf, tag);
    let len = u32::try_from(data.len()).map_err(|_| EncodeError::TooLong {
        what: "tagged field",
        len: data.len(),
    })?;
    put_uvarint(buf, len);
    buf.put_slice(data);
    Ok(())
}
