//! The four codecs Kafka uses inside record batches, as Kafka frames them: gzip, snappy
//! (raw, or xerial-framed as the Java client writes it), LZ4 frames, and zstd.
//!
//! The broker stores compressed batches untouched; it decompresses only to look inside
//! (timestamps for ListOffsets, its own records) and always with a size limit, so a small
//! batch cannot expand into unbounded memory.

use std::io::Read;

use crate::records::{Compression, RecordsError};

/// The xerial snappy stream header: magic, then version and compatible version (both 1).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

fn bomb() -> RecordsError {
    RecordsError::Invalid {
        reason: "decompressed records exceed the size limit",
    }
}

fn corrupt(reason: &'static str) -> RecordsError {
    RecordsError::Invalid { reason }
}

/// Reads all of `reader`, failing if it yields more than `limit` bytes.
fn read_limited(
    reader: impl Read,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| corrupt(what))?;
    if out.len() > limit {
        return Err(bomb());
    }
    Ok(out)
}

fn snappy_block(data: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len = snap::raw::decompress_len(data).map_err(|_| corrupt("corrupt snappy data"))?;
    if out.len() + len > limit {
        return Err(bomb());
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(data, &mut out[start..])
        .map_err(|_| corrupt("corrupt snappy data"))?;
    Ok(())
}

fn snappy_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    if data.len() >= XERIAL_HEADER_LEN && &data[..8] == XERIAL_MAGIC {
        let mut rest = &data[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            if rest.len() < 4 {
                return Err(corrupt("truncated xerial snappy block length"));
            }
            let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            rest = &rest[4..];
            if len > rest.len() {
                return Err(corrupt("truncated xerial snappy block"));
            }
            snappy_block(&rest[..len], limit, &mut out)?;
            rest = &rest[len..];
        }
    } else {
        snappy_block(data, limit, &mut out)?;
    }
    Ok(out)
}

/// Decompresses a batch's records section (the bytes after the 61-byte header).
pub fn decompress(codec: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, RecordsError> {
    match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(bomb());
            }
            Ok(data.to_vec())
        }
        Compression::Gzip => read_limited(
            flate2::read::MultiGzDecoder::new(data),
            limit,
            "corrupt gzip data",
        ),
        Compression::Snappy => snappy_decompress(data, limit),
        Compression::Lz4 => read_limited(
            lz4_flex::frame::FrameDecoder::new(data),
            limit,
            "corrupt lz4 data",
        ),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::new(data).map_err(|_| corrupt("corrupt zstd data"))?;
            read_limited(decoder, limit, "corrupt zstd data")
        }
    }
}

/// Compresses a records section the way Kafka clients do (snappy as xerial frames, like the
/// Java client; LZ4 as frames).
pub fn compress(codec: Compression, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Snappy => {
            let mut out = Vec::with_capacity(data.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            // The Java client writes 32 KiB blocks.
            for chunk in data.chunks(32 * 1024) {
                let block = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .expect("snappy block fits");
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        Compression::Lz4 => {
            let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
            e.write_all(data).expect("writing to a Vec cannot fail");
            e.finish().expect("writing to a Vec cannot fail")
        }
        Compression::Zstd => zstd::bulk::compress(data, 3).expect("zstd of an in-memory buffer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips() {
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in CODECS {
            let c = compress(codec, &data);
            assert_eq!(
                decompress(codec, &c, data.len()).unwrap(),
                data,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn raw_snappy_is_accepted() {
        let data = b"hello hello hello hello".repeat(100);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw, 1 << 20).unwrap(),
            data
        );
    }

    #[test]
    fn expansion_beyond_the_limit_is_refused() {
        let data = vec![0u8; 1 << 20];
        for codec in CODECS {
            let c = compress(codec, &data);
            assert!(decompress(codec, &c, 1000).is_err(), "{codec:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let garbage: Vec<u8> = (0..500u32).map(|i| (i * 7919 % 256) as u8).collect();
        for codec in CODECS {
            let _ = decompress(codec, &garbage, 1 << 20);
        }
        let mut xerial = XERIAL_MAGIC.to_vec();
        xerial.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        assert!(decompress(Compression::Snappy, &xerial, 1 << 20).is_err());
    }
}
