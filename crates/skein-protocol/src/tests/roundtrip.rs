//! Round trips: `decode(encode(v)) == v` for random valid values of every API and version, and
//! "never panics" for arbitrary and mutated input.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::testing::Rng;
use crate::{ApiKey, Encode, RequestBody, ResponseBody};

/// Every (api, version) pair the codec supports.
fn all_versions() -> Vec<(ApiKey, i16)> {
    ApiKey::all()
        .iter()
        .flat_map(|&k| {
            let (lo, hi) = k.valid_versions();
            (lo..=hi).map(move |v| (k, v))
        })
        .collect()
}

/// Encodes a random request and response for `key`/`version` and checks both round-trip.
fn check_round_trip(key: ApiKey, version: i16, rng: &mut Rng) -> Result<(), TestCaseError> {
    let request = RequestBody::random(key, version, rng);
    let mut buf = BytesMut::new();
    request
        .encode(&mut buf, version)
        .map_err(|e| TestCaseError::fail(format!("{key} v{version} request encode: {e}")))?;
    let encoded = buf.freeze();
    let mut input = encoded.clone();
    let decoded = RequestBody::decode(key, version, &mut input)
        .map_err(|e| TestCaseError::fail(format!("{key} v{version} request decode: {e}")))?;
    prop_assert!(
        input.is_empty(),
        "{key} v{version}: request bytes left over"
    );
    prop_assert_eq!(&decoded, &request, "{} v{} request", key, version);
    let mut again = BytesMut::new();
    decoded.encode(&mut again, version).unwrap();
    prop_assert_eq!(&again[..], &encoded[..]);

    let response = ResponseBody::random(key, version, rng);
    let mut buf = BytesMut::new();
    response
        .encode(&mut buf, version)
        .map_err(|e| TestCaseError::fail(format!("{key} v{version} response encode: {e}")))?;
    let encoded = buf.freeze();
    let mut input = encoded.clone();
    let decoded = ResponseBody::decode(key, version, &mut input)
        .map_err(|e| TestCaseError::fail(format!("{key} v{version} response decode: {e}")))?;
    prop_assert!(
        input.is_empty(),
        "{key} v{version}: response bytes left over"
    );
    prop_assert_eq!(&decoded, &response, "{} v{} response", key, version);
    let mut again = BytesMut::new();
    decoded.encode(&mut again, version).unwrap();
    prop_assert_eq!(&again[..], &encoded[..]);
    Ok(())
}

/// Decodes `bytes` as a request and a response of `key`/`version`; whatever decodes must
/// re-encode, and re-decoding that must give the same bytes again. Never panics.
fn check_arbitrary(key: ApiKey, version: i16, bytes: &[u8]) -> Result<(), TestCaseError> {
    let mut input = Bytes::copy_from_slice(bytes);
    if let Ok(body) = RequestBody::decode(key, version, &mut input) {
        let mut first = BytesMut::new();
        body.encode(&mut first, version)
            .map_err(|e| TestCaseError::fail(format!("{key} v{version} re-encode: {e}")))?;
        let mut input = first.clone().freeze();
        let again = RequestBody::decode(key, version, &mut input).unwrap();
        let mut second = BytesMut::new();
        again.encode(&mut second, version).unwrap();
        prop_assert_eq!(first, second);
    }
    let mut input = Bytes::copy_from_slice(bytes);
    if let Ok(body) = ResponseBody::decode(key, version, &mut input) {
        let mut first = BytesMut::new();
        body.encode(&mut first, version)
            .map_err(|e| TestCaseError::fail(format!("{key} v{version} re-encode: {e}")))?;
        let mut input = first.clone().freeze();
        let again = ResponseBody::decode(key, version, &mut input).unwrap();
        let mut second = BytesMut::new();
        again.encode(&mut second, version).unwrap();
        prop_assert_eq!(first, second);
    }
    Ok(())
}

/// The messages the broker relies on most get many more cases than the rest.
const CORE_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::InitProducerId,
    ApiKey::ConsumerGroupHeartbeat,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_api_and_version_round_trips(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for (key, version) in all_versions() {
            check_round_trip(key, version, &mut rng)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn core_apis_round_trip(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for &key in CORE_APIS {
            let (lo, hi) = key.valid_versions();
            for version in lo..=hi {
                check_round_trip(key, version, &mut rng)?;
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        pick in any::<prop::sample::Index>(),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let versions = all_versions();
        let (key, version) = versions[pick.index(versions.len())];
        check_arbitrary(key, version, &bytes)?;
    }

    /// Random bytes rarely get past the first field, so also corrupt valid encodings: flip,
    /// insert and remove bytes, and truncate.
    #[test]
    fn corrupted_encodings_never_panic(seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        for (key, version) in all_versions() {
            for request in [true, false] {
                let mut buf = BytesMut::new();
                if request {
                    RequestBody::random(key, version, &mut rng).encode(&mut buf, version).unwrap();
                } else {
                    ResponseBody::random(key, version, &mut rng).encode(&mut buf, version).unwrap();
                }
                let mut bytes = buf.to_vec();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(bytes.len() as u64 + 1) as usize;
                    match rng.below(4) {
                        0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                        1 if at < bytes.len() => bytes[at] = 0xff,
                        2 => bytes.insert(at, rng.next_u64() as u8),
                        _ => bytes.truncate(at),
                    }
                }
                check_arbitrary(key, version, &bytes)?;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whole request frames with a valid header and an arbitrary body, as the fuzz target sees
    /// them, plus fully random frames.
    #[test]
    fn arbitrary_request_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        correlation_id in any::<i32>(),
        body in prop::collection::vec(any::<u8>(), 0..120),
        raw in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let versions = all_versions();
        let (key, version) = versions[pick.index(versions.len())];
        let header = crate::RequestHeader {
            api_key: key as i16,
            api_version: version,
            correlation_id,
            // Header v0 (ControlledShutdown v0) has no client id.
            client_id: (key.request_header_version(version) > 0).then(|| "fuzz".into()),
        };
        let empty = RequestBody::random(key, version, &mut Rng::new(0));
        let mut frame = crate::encode_request(&header, &empty).unwrap().split_off(4);
        let header_len = frame.len() - empty.encoded_len(version);
        frame.truncate(header_len);
        frame.extend_from_slice(&body);
        match crate::decode_request(frame.freeze()) {
            Ok((decoded, _)) => prop_assert_eq!(decoded, header),
            Err(e) => prop_assert_eq!(e.header.map(|h| h.correlation_id), Some(correlation_id)),
        }
        let _ = crate::decode_request(Bytes::from(raw));
    }
}
