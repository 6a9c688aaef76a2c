//! Every advertised API and version, fed random (mostly invalid) requests: the broker must
//! answer each one (no panic, no missing reply) with a response that encodes in the
//! request's version.

use std::collections::BTreeMap;
use std::time::Duration;

use skein_broker::{Broker, BrokerConfig, Reply, RequestContext, SUPPORTED_APIS};
use skein_protocol::testing::Rng;
use skein_protocol::{ApiKey, RequestBody};

fn broker(dir: &std::path::Path) -> std::sync::Arc<Broker> {
    let mut settings = BTreeMap::new();
    settings.insert("log.dirs".to_string(), dir.display().to_string());
    settings.insert("listeners".to_string(), "127.0.0.1:0".to_string());
    Broker::open(BrokerConfig::from_settings(settings).unwrap()).unwrap()
}

/// Keeps random requests from waiting: fetches do not long-poll, produces want a reply.
fn tame(body: &mut RequestBody) {
    match body {
        RequestBody::Fetch(f) => f.max_wait_ms = 0,
        RequestBody::Produce(p) if p.acks == 0 => p.acks = 1,
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_and_version_answers_random_requests() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path());
    broker.start().await.unwrap();
    // A topic that random names will not hit but some requests can, to exercise both paths.
    broker.auto_create_topic("t").unwrap();
    let seed = std::env::var("SKEIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = Rng::new(seed);
    for &(key, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            for round in 0..20 {
                let mut body = RequestBody::random(key, version, &mut rng);
                tame(&mut body);
                let ctx = RequestContext {
                    api_key: key,
                    api_version: version,
                    correlation_id: round,
                    client_id: None,
                    client_host: "/127.0.0.1".into(),
                    connection: std::sync::Arc::new(
                        skein_broker::listener::ConnectionContext::new(
                            "PLAINTEXT",
                            skein_broker::listener::SecurityProtocol::Plaintext,
                            "127.0.0.1:40000".parse().unwrap(),
                        ),
                    ),
                    mute: Default::default(),
                };
                let what = format!("{key:?} v{version} round {round} (seed {seed})");
                let response = match broker.handle(&ctx, body) {
                    Reply::Now(r) => r,
                    Reply::Later(f) => tokio::time::timeout(Duration::from_secs(30), f)
                        .await
                        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s")),
                    Reply::Fetch(f) => tokio::time::timeout(Duration::from_secs(30), f)
                        .await
                        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
                        .into_inline()
                        .unwrap_or_else(|e| panic!("{what}: records unreadable: {e}")),
                    Reply::Nothing => panic!("{what}: no reply"),
                };
                assert_eq!(response.api_key(), key, "{what}");
                if let Err(e) = skein_protocol::encode_response(round, key, version, &response) {
                    panic!("{what}: response does not encode: {e}");
                }
            }
        }
    }
    assert!(SUPPORTED_APIS.iter().any(|(k, _, _)| *k == ApiKey::Produce));
}
