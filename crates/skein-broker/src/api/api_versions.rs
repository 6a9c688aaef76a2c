//! ApiVersions (KIP-511): the APIs and versions this broker serves.

use skein_protocol::messages::api_versions_request::ApiVersionsRequest;
use skein_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::SUPPORTED_APIS;
use crate::error::ErrorCode;

/// The served APIs, ordered by key as Kafka lists them.
fn api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| ApiVersion {
            api_key: *key as i16,
            min_version: *min,
            max_version: *max,
            ..Default::default()
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}

/// KIP-511: client software names and versions must look like `[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?`.
fn valid_software_field(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.first().is_some_and(|c| c.is_ascii_alphanumeric())
        && bytes.last().is_some_and(|c| c.is_ascii_alphanumeric())
        && bytes
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

pub fn handle(version: i16, req: ApiVersionsRequest) -> ApiVersionsResponse {
    let mut resp = ApiVersionsResponse {
        api_keys: api_keys(),
        ..Default::default()
    };
    if version >= 3
        && !(valid_software_field(&req.client_software_name)
            && valid_software_field(&req.client_software_version))
    {
        resp.error_code = ErrorCode::INVALID_REQUEST.code();
    }
    resp
}

/// The answer to an ApiVersions request of a version this broker does not know: encoded as
/// v0 by the caller, with UNSUPPORTED_VERSION and the full list so the client can pick.
pub fn unsupported_version_response() -> ApiVersionsResponse {
    ApiVersionsResponse {
        error_code: ErrorCode::UNSUPPORTED_VERSION.code(),
        api_keys: api_keys(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_field_rule() {
        assert!(valid_software_field("librdkafka"));
        assert!(valid_software_field("2.3.0"));
        assert!(valid_software_field("apache-kafka-java"));
        assert!(!valid_software_field(""));
        assert!(!valid_software_field("-x"));
        assert!(!valid_software_field("a b"));
    }
}
