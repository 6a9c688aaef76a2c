//! Fuzzes request decoding: any frame body must decode or fail cleanly, never panic or abort,
//! and whatever decodes must re-encode and decode to the same bytes ([`drivers::decode_request`]).
//!
//! Run with `cargo +nightly fuzz run decode_request` from the workspace root.

#![no_main]

#[allow(dead_code)] // each target runs one of the shared drivers
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::decode_request(data));
