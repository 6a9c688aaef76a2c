//! Fuzzes the TLS front path: what a client can send before and during the handshake of an
//! SSL listener (fed to the same rustls server configuration Skein builds: ring provider,
//! TLS 1.2 and 1.3, client certificates requested), and the DER subject reader and the
//! principal mapping that a client certificate reaches. Nothing may panic or abort.
//!
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run tls_front --fuzz-dir fuzz` from the workspace
//! root. The key in `fixtures/` is a self-signed test key, used for nothing else.

#![no_main]

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skein_server::principal::{subject_dn, PrincipalMapper};

const KEYSTORE: &[u8] = include_bytes!("../fixtures/fuzz-only-server.pem");

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(KEYSTORE)
                .collect::<Result<_, _>>()
                .expect("fixture certificate");
            let key = PrivateKeyDer::from_pem_slice(KEYSTORE).expect("fixture key");
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            roots.add(chain[0].clone()).expect("fixture as its own CA");
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .expect("verifier");
            Arc::new(
                rustls::ServerConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
                    .expect("versions")
                    .with_client_cert_verifier(verifier)
                    .with_single_cert(chain, key)
                    .expect("server config"),
            )
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    // The handshake: bytes in, in the chunks a socket might deliver them.
    if let Ok(mut conn) = rustls::ServerConnection::new(config()) {
        let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
        for piece in data.chunks(chunk) {
            let mut cursor = Cursor::new(piece);
            if conn.read_tls(&mut cursor).is_err() || conn.process_new_packets().is_err() {
                break;
            }
            let mut out = Vec::new();
            let _ = conn.write_tls(&mut out);
        }
    }
    // A certificate's subject, then the mapping rules of the first line applied to it.
    let dn = subject_dn(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let (rules, subject) = text.split_once('\n').unwrap_or((text, "CN=x"));
        if let Ok(mapper) = PrincipalMapper::parse(rules) {
            let _ = mapper.map(subject);
            if let Some(dn) = &dn {
                let _ = mapper.map(dn);
            }
        }
    }
});
