//! Fuzzes request decoding: any frame body must decode or fail cleanly, never panic or abort,
//! and whatever decodes must re-encode and decode to the same bytes.
//!
//! Run with `cargo +nightly fuzz run decode_request` from the workspace root.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, body)) = skein_protocol::decode_request(Bytes::copy_from_slice(data)) else {
        return;
    };
    let version = header.api_version;
    let mut first = BytesMut::new();
    body.encode(&mut first, version)
        .expect("a decoded body re-encodes");
    let again =
        skein_protocol::RequestBody::decode(body.api_key(), version, &mut first.clone().freeze())
            .expect("a re-encoded body decodes");
    let mut second = BytesMut::new();
    again.encode(&mut second, version).expect("re-encodes");
    assert_eq!(first, second);
});
