//! Kafka error codes, as data: handlers put these in responses. Rust errors are kept for
//! broken I/O and bugs. The table lives in `skein-protocol`, shared with the controller.

pub use skein_protocol::error::{ApiError, ErrorCode};
