//! Property tests over every API and version: generated values round-trip exactly, and
//! arbitrary or corrupted bytes never make decoding panic.

mod roundtrip;

mod metadata_records;
