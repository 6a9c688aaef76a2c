//! Request and response headers, and whole frames.
//!
//! A frame on the wire is a 4-byte big-endian size followed by that many bytes: a header, then
//! the body. Request header v1 is `api_key, api_version, correlation_id, client_id` (client id
//! as a nullable string with an int16 length, never compact); v2 adds a tagged-field section;
//! v0 (ControlledShutdown v0 only) has no client id. Response header v0 is the correlation id;
//! v1 adds a tagged-field section. `ApiKey` decides which header a version uses.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{self as c, DecodeError, EncodeError};
use crate::messages::{ApiKey, RequestBody, ResponseBody};

/// A request header (v0, v1 or v2; the version follows from the api key and version).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    pub client_id: Option<String>,
}

/// A request that could not be decoded, with whatever of its header was readable so the broker
/// can still answer with the right correlation id.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct RequestDecodeError {
    /// The header as far as it was decoded: `api_key`, `api_version` and `correlation_id` are
    /// set whenever the first eight bytes were there; `client_id` only when the header was
    /// decoded in full. `None` when even those eight bytes were missing.
    pub header: Option<RequestHeader>,
    /// What went wrong.
    pub error: DecodeError,
}

/// Decodes a request header from the start of a frame body (after the 4-byte size).
///
/// An unknown api key or an unsupported version yields [`DecodeError::UnsupportedRequest`],
/// which carries the correlation id; in that case the client id is not read.
pub fn decode_request_header(buf: &mut Bytes) -> Result<RequestHeader, DecodeError> {
    let api_key = c::get_i16(buf)?;
    let api_version = c::get_i16(buf)?;
    let correlation_id = c::get_i32(buf)?;
    let unsupported = DecodeError::UnsupportedRequest {
        api_key,
        api_version,
        correlation_id,
    };
    let Some(key) = ApiKey::from_i16(api_key) else {
        return Err(unsupported);
    };
    if !key.supports(api_version) {
        return Err(unsupported);
    }
    let header_version = key.request_header_version(api_version);
    let client_id = if header_version >= 1 {
        c::get_opt_string(buf, false, true, "ClientId")?
    } else {
        None
    };
    if header_version >= 2 {
        // Kafka defines no header tags that a broker acts on; skip them.
        c::get_tagged_fields(buf, |_, _| Ok(()))?;
    }
    Ok(RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id,
    })
}

/// Decodes a whole request frame (without its 4-byte size prefix). Bytes after the body are
/// ignored, as Kafka does.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, RequestBody), RequestDecodeError> {
    let mut buf = frame;
    // Peek the ids first so that every later failure can report them.
    let ids = (buf.len() >= 8).then(|| RequestHeader {
        api_key: i16::from_be_bytes([buf[0], buf[1]]),
        api_version: i16::from_be_bytes([buf[2], buf[3]]),
        correlation_id: i32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        client_id: None,
    });
    let header = decode_request_header(&mut buf)
        .map_err(|error| RequestDecodeError { header: ids, error })?;
    let key = ApiKey::from_i16(header.api_key).expect("checked by decode_request_header");
    match RequestBody::decode(key, header.api_version, &mut buf) {
        Ok(body) => Ok((header, body)),
        Err(error) => Err(RequestDecodeError {
            header: Some(header),
            error,
        }),
    }
}

/// Reserves the 4-byte size prefix; `finish_frame` fills it in.
fn start_frame() -> BytesMut {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    buf
}

fn finish_frame(mut buf: BytesMut) -> Result<BytesMut, EncodeError> {
    let len = buf.len() - 4;
    let size = i32::try_from(len).map_err(|_| EncodeError::TooLong { what: "frame", len })?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

fn check_version(api_key: ApiKey, version: i16) -> Result<(), EncodeError> {
    if api_key.supports(version) {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedVersion {
            api_key: api_key as i16,
            version,
        })
    }
}

/// Encodes a response frame: the 4-byte size, the response header (v0 or v1 as `api_key` and
/// `version` require) and the body.
pub fn encode_response(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseBody,
) -> Result<BytesMut, EncodeError> {
    if body.api_key() != api_key {
        return Err(EncodeError::ApiKeyMismatch {
            expected: api_key as i16,
            actual: body.api_key() as i16,
        });
    }
    check_version(api_key, version)?;
    let mut buf = start_frame();
    c::put_i32(&mut buf, correlation_id);
    if api_key.response_header_version(version) >= 1 {
        c::put_uvarint(&mut buf, 0);
    }
    body.encode(&mut buf, version)?;
    finish_frame(buf)
}

/// A response frame with bytes still to be inserted: see [`encode_response_spliced`].
#[derive(Debug)]
pub struct SplicedFrame {
    /// The encoded frame without the spliced bytes; its size prefix already counts them.
    pub frame: BytesMut,
    /// `(position in frame, length)`: insert that many bytes at that position, in order.
    pub splices: Vec<(usize, usize)>,
}

/// Encodes a response whose `records` fields are followed by bytes the caller writes itself
/// (zero-copy fetch). `extra` has one length per `records` field of the body, in encoding
/// order (0 for none): each field's length prefix and the frame size count those bytes.
pub fn encode_response_spliced(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: &ResponseBody,
    extra: Vec<usize>,
) -> Result<SplicedFrame, EncodeError> {
    let (mut frame, splices) = c::with_splicing(extra, || {
        encode_response(correlation_id, api_key, version, body)
    })?;
    let len = frame.len() - 4 + splices.iter().map(|(_, n)| n).sum::<usize>();
    let size = i32::try_from(len).map_err(|_| EncodeError::TooLong { what: "frame", len })?;
    frame[..4].copy_from_slice(&size.to_be_bytes());
    Ok(SplicedFrame { frame, splices })
}

/// Encodes a request frame with its size prefix (for tests and the CLI). The api key in the
/// header must match the body.
pub fn encode_request(header: &RequestHeader, body: &RequestBody) -> Result<BytesMut, EncodeError> {
    let api_key = body.api_key();
    if header.api_key != api_key as i16 {
        return Err(EncodeError::ApiKeyMismatch {
            expected: header.api_key,
            actual: api_key as i16,
        });
    }
    let version = header.api_version;
    check_version(api_key, version)?;
    let header_version = api_key.request_header_version(version);
    let mut buf = start_frame();
    c::put_i16(&mut buf, header.api_key);
    c::put_i16(&mut buf, version);
    c::put_i32(&mut buf, header.correlation_id);
    if header_version >= 1 {
        c::put_opt_string(
            &mut buf,
            header.client_id.as_deref(),
            false,
            true,
            "ClientId",
        )?;
    }
    if header_version >= 2 {
        c::put_uvarint(&mut buf, 0);
    }
    body.encode(&mut buf, version)?;
    finish_frame(buf)
}

/// Decodes a response frame (without its size prefix) for a request of `api_key` at
/// `version`; returns the correlation id and the body. Bytes after the body are ignored.
pub fn decode_response(
    api_key: ApiKey,
    version: i16,
    frame: Bytes,
) -> Result<(i32, ResponseBody), DecodeError> {
    let mut buf = frame;
    let correlation_id = c::get_i32(&mut buf)?;
    if api_key.response_header_version(version) >= 1 {
        c::get_tagged_fields(&mut buf, |_, _| Ok(()))?;
    }
    let body = ResponseBody::decode(api_key, version, &mut buf)?;
    Ok((correlation_id, body))
}
