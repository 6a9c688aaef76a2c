//! Fuzzes the TLS front path ([`drivers::tls_front`]): what a client can send before and
//! during the handshake of an SSL listener (fed to the same rustls server configuration Skein
//! builds: ring provider, TLS 1.2 and 1.3, client certificates requested), and the DER subject
//! reader and the principal mapping that a client certificate reaches. Nothing may panic.
//!
//! Run with `cargo +nightly fuzz run tls_front` from the workspace root. The key in
//! `fixtures/` is a self-signed test key, used for nothing else.

#![no_main]

#[allow(dead_code)] // each target runs one of the shared drivers
mod drivers;

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::tls_front(data));
