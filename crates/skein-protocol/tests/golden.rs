//! Golden bytes: hand-computed encodings checked byte for byte, plus the malformed frames a
//! broker must refuse without aborting (a 4-byte request claiming a billion topics).

use bytes::{Bytes, BytesMut};
use skein_protocol::messages::api_versions_response::ApiVersion;
use skein_protocol::messages::metadata_request::MetadataRequestTopic;
use skein_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, MetadataRequest, ProduceRequest,
    ProduceResponse,
};
use skein_protocol::{
    decode_request, decode_request_header, decode_response, encode_request, encode_response,
    ApiKey, Decode, DecodeError, Encode, RequestBody, RequestHeader, ResponseBody, Uuid,
};

/// Strips the 4-byte size prefix after checking it.
fn unframe(frame: &[u8]) -> Bytes {
    let size = i32::from_be_bytes(frame[..4].try_into().unwrap());
    assert_eq!(size as usize, frame.len() - 4, "size prefix");
    Bytes::copy_from_slice(&frame[4..])
}

/// ApiVersions v3 as librdkafka sends it: request header v2 (client id with an int16 length,
/// then an empty tagged-field section) and a body of two compact strings.
const API_VERSIONS_V3_REQUEST: &[u8] = &[
    0x00, 0x00, 0x00, 0x24, // size 36
    0x00, 0x12, // api key 18
    0x00, 0x03, // version 3
    0x00, 0x00, 0x00, 0x01, // correlation id 1
    0x00, 0x07, b'r', b'd', b'k', b'a', b'f', b'k', b'a', // client id
    0x00, // header tagged fields
    0x0b, b'l', b'i', b'b', b'r', b'd', b'k', b'a', b'f', b'k', b'a', // compact "librdkafka"
    0x06, b'2', b'.', b'3', b'.', b'0', // compact "2.3.0"
    0x00, // body tagged fields
];

#[test]
fn api_versions_v3_request_golden() {
    let (header, body) = decode_request(unframe(API_VERSIONS_V3_REQUEST)).unwrap();
    let expected_header = RequestHeader {
        api_key: 18,
        api_version: 3,
        correlation_id: 1,
        client_id: Some("rdkafka".into()),
    };
    assert_eq!(header, expected_header);
    let expected_body = RequestBody::ApiVersions(ApiVersionsRequest {
        client_software_name: "librdkafka".into(),
        client_software_version: "2.3.0".into(),
        ..Default::default()
    });
    assert_eq!(body, expected_body);
    let frame = encode_request(&expected_header, &expected_body).unwrap();
    assert_eq!(&frame[..], API_VERSIONS_V3_REQUEST);
}

/// Metadata v0: request header v1, an int32 array count and an int16-length string.
const METADATA_V0_REQUEST: &[u8] = &[
    0x00, 0x00, 0x00, 0x19, // size 25
    0x00, 0x03, 0x00, 0x00, // api key 3, version 0
    0x00, 0x00, 0x00, 0x2a, // correlation id 42
    0x00, 0x04, b't', b'e', b's', b't', // client id
    0x00, 0x00, 0x00, 0x01, // one topic
    0x00, 0x05, b't', b'o', b'p', b'i', b'c',
];

#[test]
fn metadata_v0_request_golden() {
    let (header, body) = decode_request(unframe(METADATA_V0_REQUEST)).unwrap();
    assert_eq!(header.correlation_id, 42);
    assert_eq!(header.client_id.as_deref(), Some("test"));
    let RequestBody::Metadata(ref metadata) = body else {
        panic!("not a metadata request: {body:?}");
    };
    let topics = metadata.topics.as_ref().unwrap();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0].name.as_deref(), Some("topic"));
    // Fields absent in v0 keep their spec defaults.
    assert!(metadata.allow_auto_topic_creation);
    assert_eq!(topics[0].topic_id, Uuid::ZERO);
    assert_eq!(
        &encode_request(&header, &body).unwrap()[..],
        METADATA_V0_REQUEST
    );
}

#[test]
fn trailing_bytes_after_a_request_are_ignored() {
    let mut frame = METADATA_V0_REQUEST[4..].to_vec();
    frame.extend_from_slice(&[1, 2, 3]);
    let (_, body) = decode_request(Bytes::from(frame)).unwrap();
    assert_eq!(body.api_key(), ApiKey::Metadata);
}

/// ApiVersions v3 response: response header v0 (no tagged fields, unlike other flexible
/// responses), then a compact array and the body's tagged fields. Fields at their default
/// (FinalizedFeaturesEpoch = -1, empty feature lists) are not written.
const API_VERSIONS_V3_RESPONSE: &[u8] = &[
    0x00, 0x00, 0x00, 0x13, // size 19
    0x00, 0x00, 0x00, 0x07, // correlation id 7
    0x00, 0x00, // error code
    0x02, // compact array, one element
    0x00, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x00, // produce 0..11, no tags
    0x00, 0x00, 0x00, 0x00, // throttle time
    0x00, // tagged fields
];

#[test]
fn api_versions_v3_response_golden() {
    let body = ResponseBody::ApiVersions(ApiVersionsResponse {
        api_keys: vec![ApiVersion {
            api_key: 0,
            min_version: 0,
            max_version: 11,
            ..Default::default()
        }],
        ..Default::default()
    });
    let frame = encode_response(7, ApiKey::ApiVersions, 3, &body).unwrap();
    assert_eq!(&frame[..], API_VERSIONS_V3_RESPONSE);
    let (correlation_id, decoded) =
        decode_response(ApiKey::ApiVersions, 3, unframe(API_VERSIONS_V3_RESPONSE)).unwrap();
    assert_eq!(correlation_id, 7);
    assert_eq!(decoded, body);
}

#[test]
fn flexible_responses_use_header_v1() {
    let body = ResponseBody::Produce(ProduceResponse::default());
    let frame = encode_response(9, ApiKey::Produce, 9, &body).unwrap();
    // Size, correlation id, empty header tagged fields, empty compact array, throttle time,
    // empty body tagged fields.
    assert_eq!(
        &frame[..],
        &[0, 0, 0, 11, 0, 0, 0, 9, 0, 1, 0, 0, 0, 0, 0][..]
    );
    assert_eq!(ApiKey::Produce.response_header_version(8), 0);
    assert_eq!(ApiKey::ApiVersions.response_header_version(4), 0);
    assert_eq!(ApiKey::ApiVersions.request_header_version(3), 2);
    assert_eq!(ApiKey::ControlledShutdown.request_header_version(0), 0);
    assert_eq!(ApiKey::Metadata.request_header_version(8), 1);
}

#[test]
fn spec_defaults_apply() {
    let fetch = FetchRequest::default();
    assert_eq!(fetch.replica_id, -1);
    assert_eq!(fetch.max_bytes, 0x7fff_ffff);
    assert_eq!(ProduceRequest::default().transactional_id, None);
    // A nullable array with no spec default defaults to empty, as in Kafka.
    assert_eq!(MetadataRequest::default().topics, Some(vec![]));
}

#[test]
fn a_four_byte_metadata_request_claiming_a_billion_topics_is_refused() {
    let mut body = Bytes::from_static(&[0x3b, 0x9a, 0xca, 0x00]);
    let err = RequestBody::decode(ApiKey::Metadata, 1, &mut body).unwrap_err();
    assert!(
        matches!(
            err,
            DecodeError::InvalidLength {
                len: 1_000_000_000,
                ..
            }
        ),
        "{err:?}"
    );

    // The same as a whole frame keeps the header so the broker can answer.
    let frame = Bytes::from_static(&[
        0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x05, 0xff, 0xff, 0x3b, 0x9a, 0xca, 0x00,
    ]);
    let err = decode_request(frame).unwrap_err();
    assert_eq!(err.header.unwrap().correlation_id, 5);
    assert!(matches!(err.error, DecodeError::InvalidLength { .. }));
}

#[test]
fn huge_compact_counts_and_lengths_are_refused() {
    // Metadata v12 (flexible): a compact array count of u32::MAX - 1.
    let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(matches!(
        MetadataRequest::decode(&mut body, 12),
        Err(DecodeError::InvalidLength { .. })
    ));
    // A count that fits but still exceeds what remains.
    let mut body = Bytes::from_static(&[0x05, 0x00]);
    assert!(MetadataRequest::decode(&mut body, 12).is_err());
    // A varint that never ends.
    let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(
        MetadataRequest::decode(&mut body, 12),
        Err(DecodeError::VarIntTooLong)
    );
    // A string length beyond the input.
    let mut body = Bytes::from_static(&[0x00, 0x00, 0x00, 0x01, 0x7f, 0xff, b'a']);
    assert!(matches!(
        MetadataRequest::decode(&mut body, 0),
        Err(DecodeError::InvalidLength { .. })
    ));
    // Negative non-null lengths.
    let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe]);
    assert!(matches!(
        MetadataRequest::decode(&mut body, 1),
        Err(DecodeError::InvalidLength { len: -2, .. })
    ));
}

#[test]
fn null_where_not_nullable() {
    // Metadata v0 does not allow a null topic array.
    let mut body = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        MetadataRequest::decode(&mut body, 0),
        Err(DecodeError::NullNotAllowed { field: "Topics" })
    ));
    let request = MetadataRequest {
        topics: None,
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    assert!(request.encode(&mut buf, 0).is_err());
    buf.clear();
    request.encode(&mut buf, 1).unwrap();
    assert_eq!(&buf[..4], &[0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn fields_absent_in_a_version_are_skipped() {
    let request = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            topic_id: Uuid::random(),
            name: Some("t".into()),
            ..Default::default()
        }]),
        include_topic_authorized_operations: true,
        ..Default::default()
    };
    let mut buf = BytesMut::new();
    request.encode(&mut buf, 0).unwrap();
    assert_eq!(&buf[..], &[0, 0, 0, 1, 0, 1, b't']);
}

#[test]
fn unknown_or_unsupported_requests_keep_their_correlation_id() {
    let mut buf = Bytes::from_static(&[0x03, 0xe7, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07]);
    assert_eq!(
        decode_request_header(&mut buf),
        Err(DecodeError::UnsupportedRequest {
            api_key: 999,
            api_version: 0,
            correlation_id: 7
        })
    );
    let frame = Bytes::from_static(&[0x00, 0x12, 0x00, 0x63, 0x00, 0x00, 0x00, 0x08, 0xff, 0xff]);
    let err = decode_request(frame).unwrap_err();
    assert_eq!(
        err.error,
        DecodeError::UnsupportedRequest {
            api_key: 18,
            api_version: 99,
            correlation_id: 8
        }
    );
    assert_eq!(err.header.unwrap().correlation_id, 8);
    assert!(decode_request(Bytes::from_static(&[0x00, 0x12]))
        .unwrap_err()
        .header
        .is_none());
}

#[test]
fn unknown_tagged_fields_survive_a_round_trip() {
    // ApiVersions v3 request body with an unknown tag 9 carrying two bytes.
    let input: &[u8] = &[0x01, 0x01, 0x01, 0x09, 0x02, 0xab, 0xcd];
    let decoded = ApiVersionsRequest::decode(&mut Bytes::copy_from_slice(input), 3).unwrap();
    assert_eq!(
        decoded.unknown_tagged_fields,
        vec![(9, Bytes::from_static(&[0xab, 0xcd]))]
    );
    let mut buf = BytesMut::new();
    decoded.encode(&mut buf, 3).unwrap();
    assert_eq!(&buf[..], input);
    assert_eq!(decoded.encoded_len(3), input.len());
}

#[test]
fn api_key_metadata() {
    assert_eq!(ApiKey::from_i16(18), Some(ApiKey::ApiVersions));
    assert_eq!(ApiKey::from_i16(-1), None);
    assert_eq!(ApiKey::Produce.name(), "Produce");
    assert_eq!(ApiKey::Produce.flexible_min(), Some(9));
    assert!(ApiKey::all()
        .windows(2)
        .all(|w| (w[0] as i16) < (w[1] as i16)));
    assert!(ApiKey::Produce.listeners().contains(&"broker"));
    let (lo, hi) = ApiKey::Metadata.valid_versions();
    assert!(lo <= 1 && hi >= 12);
}

/// A spliced Fetch response, with the spliced bytes inserted where it says, is byte for byte
/// the response encoded with those records inline, in flexible and non-flexible versions.
#[test]
fn spliced_fetch_response_equals_inline_encoding() {
    use bytes::{Bytes, BytesMut};
    use skein_protocol::messages::fetch_response::{
        FetchResponse, FetchableTopicResponse, PartitionData,
    };
    use skein_protocol::{encode_response, encode_response_spliced, ApiKey, ResponseBody};

    let file_a: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let file_c: Vec<u8> = vec![7u8; 70_000];
    let partition = |index: i32, records: &[u8]| PartitionData {
        partition_index: index,
        high_watermark: 10,
        records: Some(Bytes::copy_from_slice(records)),
        ..Default::default()
    };
    let response = |a: &[u8], c: &[u8]| {
        ResponseBody::Fetch(FetchResponse {
            responses: vec![
                FetchableTopicResponse {
                    topic: "t".into(),
                    partitions: vec![partition(0, a), partition(1, b"")],
                    ..Default::default()
                },
                FetchableTopicResponse {
                    topic: "u".into(),
                    partitions: vec![partition(0, c)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        })
    };
    for version in [4i16, 11, 12, 16] {
        let inline =
            encode_response(9, ApiKey::Fetch, version, &response(&file_a, &file_c)).unwrap();
        let spliced = encode_response_spliced(
            9,
            ApiKey::Fetch,
            version,
            &response(b"", b""),
            vec![file_a.len(), 0, file_c.len()],
        )
        .unwrap();
        assert_eq!(
            spliced.splices.len(),
            2,
            "v{version}: zero lengths are not spliced"
        );
        let mut rebuilt = BytesMut::new();
        let mut at = 0;
        for ((pos, len), data) in spliced.splices.iter().zip([&file_a, &file_c]) {
            assert_eq!(*len, data.len());
            rebuilt.extend_from_slice(&spliced.frame[at..*pos]);
            rebuilt.extend_from_slice(data);
            at = *pos;
        }
        rebuilt.extend_from_slice(&spliced.frame[at..]);
        assert_eq!(&rebuilt[..], &inline[..], "v{version}");

        // A wrong number of lengths is an error, not a malformed frame.
        let err = encode_response_spliced(9, ApiKey::Fetch, version, &response(b"", b""), vec![1])
            .unwrap_err();
        assert!(matches!(
            err,
            skein_protocol::EncodeError::SpliceMismatch { .. }
        ));
        // And splicing is off again afterwards.
        let again =
            encode_response(9, ApiKey::Fetch, version, &response(&file_a, &file_c)).unwrap();
        assert_eq!(again, inline);
    }
}
