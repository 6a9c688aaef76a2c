//! Record-batch header access, on top of `skein_protocol::records`.
//!
//! The log adds one check to the codec's header parsing: a negative `last_offset_delta` would
//! make offsets run backwards, so such a batch is refused (on append) or treated as damage (on
//! recovery).

pub use skein_protocol::records::{set_base_offset, BatchHeader, BATCH_HEADER_LEN};

/// Parses a batch header and checks what the log relies on.
pub(crate) fn parse_header(buf: &[u8]) -> Result<BatchHeader, String> {
    let header = BatchHeader::parse(buf).map_err(|e| e.to_string())?;
    if header.last_offset_delta < 0 {
        return Err(format!(
            "negative last offset delta {}",
            header.last_offset_delta
        ));
    }
    Ok(header)
}
