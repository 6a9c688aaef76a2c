//! Fuzzes the SASL front path ([`drivers::sasl_front`]): the frames a client sends before it
//! has authenticated on a SASL_PLAINTEXT/SASL_SSL listener, through the broker's connection
//! state machine (SaslHandshake v0/v1, SaslAuthenticate v0-v2, raw v0 tokens, PLAIN and
//! SCRAM-SHA-256/512 messages, re-authentication, the pre-authentication request gate).
//!
//! Run with `cargo +nightly fuzz run sasl_front` from the workspace root. The broker it drives
//! is opened (not started) on a directory under the system temp dir, one per process.

#![no_main]

#[allow(dead_code)] // each target runs one of the shared drivers
mod drivers;

use std::sync::{Arc, OnceLock};

use skein_broker::Broker;

fn broker() -> &'static Arc<Broker> {
    static BROKER: OnceLock<Arc<Broker>> = OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("skein-fuzz-sasl-{}", std::process::id()));
        drivers::open_broker(&dir)
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| drivers::sasl_front(broker(), data));
