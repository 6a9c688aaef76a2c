//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses them: the server side
//! of the exchange, and the credential derivation that AlterUserScramCredentials and
//! `skein user create` share.
//!
//! Only what Kafka's clients send is accepted: no channel binding (gs2 flag `n` or `y`), an
//! optional authzid that must equal the user, and the `tokenauth` extension refused
//! (delegation tokens are not built). Every comparison of secret-derived bytes is constant
//! time. Nothing here logs; failures carry no secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// Kafka's `ScramMechanism` numbers (AlterUserScramCredentials, UserScramCredentialRecord).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Sha256 = 1,
    Sha512 = 2,
}

impl Mechanism {
    pub fn from_i8(v: i8) -> Option<Mechanism> {
        match v {
            1 => Some(Mechanism::Sha256),
            2 => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn from_name(name: &str) -> Option<Mechanism> {
        match name {
            "SCRAM-SHA-256" => Some(Mechanism::Sha256),
            "SCRAM-SHA-512" => Some(Mechanism::Sha512),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// Kafka's lower bound on iterations.
    pub fn min_iterations(self) -> i32 {
        4096
    }

    /// Kafka's upper bound on iterations (16384).
    pub fn max_iterations(self) -> i32 {
        16384
    }

    pub(crate) fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    pub(crate) fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's `Hi(password, salt, i)`: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations).to_vec()
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac_array::<Sha512, 64>(password, salt, iterations).to_vec()
            }
        }
    }
}

/// What the server stores for one user and mechanism (never the password).
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// The stored form from a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted(m: Mechanism, salt: &[u8], salted: &[u8], iterations: i32) -> Credential {
        let client_key = m.hmac(salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            stored_key: m.hash(&client_key),
            server_key: m.hmac(salted, b"Server Key"),
            iterations,
        }
    }
}

/// Random bytes (UUID v4s from the OS generator; 122 random bits each).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    while out.len() < n {
        out.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    out.truncate(n);
    out
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RFC 5802 `saslname`: `=2C` is ',' and `=3D` is '='; any other '=' is an error.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("=2C") {
            out.push(',');
        } else if tail.starts_with("=3D") {
            out.push('=');
        } else {
            return None;
        }
        rest = &tail[3..];
    }
    out.push_str(rest);
    Some(out)
}

/// Where a server exchange is.
enum Stage {
    /// Waiting for client-first.
    First,
    /// Sent server-first; waiting for client-final.
    Final {
        user: String,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        credential: Option<Credential>,
    },
    Done,
}

/// One server-side SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    stage: Stage,
}

/// The outcome of one client message.
pub enum ScramStep {
    /// Send this to the client and wait for its next message.
    Continue(Vec<u8>),
    /// Authenticated as this user; send the server-final message.
    Done { user: String, reply: Vec<u8> },
    /// Authentication failed (the reason is safe to show the client).
    Failed(String),
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> ScramServer {
        ScramServer {
            mechanism,
            stage: Stage::First,
        }
    }

    /// Handles the next client message; `lookup` finds the stored credential of a user.
    pub fn step(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<Credential>,
    ) -> ScramStep {
        let stage = std::mem::replace(&mut self.stage, Stage::Done);
        let Ok(text) = std::str::from_utf8(message) else {
            return ScramStep::Failed("Invalid SCRAM message: not UTF-8".into());
        };
        match stage {
            Stage::First => self.first(text, lookup),
            Stage::Final {
                user,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
                credential,
            } => self.last(
                text,
                user,
                &gs2_header,
                &client_first_bare,
                &server_first,
                &nonce,
                credential,
            ),
            Stage::Done => ScramStep::Failed("Unexpected SCRAM message after completion".into()),
        }
    }

    fn first(&mut self, text: &str, lookup: impl FnOnce(&str) -> Option<Credential>) -> ScramStep {
        let bad =
            |why: &str| ScramStep::Failed(format!("Invalid SCRAM client first message: {why}"));
        // gs2-header: cbind-flag "," [authzid] ","
        let mut parts = text.splitn(3, ',');
        let (Some(flag), Some(authzid), Some(bare)) = (parts.next(), parts.next(), parts.next())
        else {
            return bad("no gs2 header");
        };
        if flag != "n" && flag != "y" {
            return bad("channel binding is not supported");
        }
        let gs2_header = format!("{flag},{authzid},");
        let mut user = None;
        let mut cnonce = None;
        for (i, attr) in bare.split(',').enumerate() {
            match (i, attr.split_once('=')) {
                (0, Some(("n", v))) => user = decode_saslname(v),
                (1, Some(("r", v))) => cnonce = Some(v.to_string()),
                (0 | 1, _) => return bad("expected n=USER,r=NONCE"),
                (_, Some(("tokenauth", _))) => {
                    return ScramStep::Failed(
                        "Delegation token authentication is not supported".into(),
                    )
                }
                // Other extensions are ignored, as Kafka ignores unknown ones.
                _ => {}
            }
        }
        let (Some(user), Some(cnonce)) = (user, cnonce) else {
            return bad("expected n=USER,r=NONCE");
        };
        if user.is_empty()
            || cnonce.is_empty()
            || !cnonce.bytes().all(|b| b > 0x20 && b < 0x7f && b != b',')
        {
            return bad("empty user or bad nonce");
        }
        if !authzid.is_empty() {
            match authzid.strip_prefix("a=").and_then(decode_saslname) {
                Some(a) if a == user => {}
                _ => {
                    return ScramStep::Failed(
                        "Authentication failed: the authorization id must equal the user".into(),
                    )
                }
            }
        }
        let credential = lookup(&user);
        // An unknown user gets a made-up salt and goes on to fail at the proof, so the
        // exchange does not tell which users exist.
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (
                self.mechanism.hash(user.as_bytes())[..16].to_vec(),
                self.mechanism.min_iterations(),
            ),
        };
        let nonce = format!(
            "{cnonce}{}",
            B64.encode(random_bytes(24)).replace(['+', '/'], "A")
        );
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let reply = server_first.clone().into_bytes();
        self.stage = Stage::Final {
            user,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first,
            nonce,
            credential,
        };
        ScramStep::Continue(reply)
    }

    #[allow(clippy::too_many_arguments)]
    fn last(
        &mut self,
        text: &str,
        user: String,
        gs2_header: &str,
        client_first_bare: &str,
        server_first: &str,
        nonce: &str,
        credential: Option<Credential>,
    ) -> ScramStep {
        let bad =
            |why: &str| ScramStep::Failed(format!("Invalid SCRAM client final message: {why}"));
        let Some(at) = text.rfind(",p=") else {
            return bad("no proof");
        };
        let without_proof = &text[..at];
        let proof = &text[at + 3..];
        let mut binding = None;
        let mut got_nonce = None;
        for (i, attr) in without_proof.split(',').enumerate() {
            match (i, attr.split_once('=')) {
                (0, Some(("c", v))) => binding = Some(v),
                (1, Some(("r", v))) => got_nonce = Some(v),
                (0 | 1, _) => return bad("expected c=BINDING,r=NONCE"),
                _ => {}
            }
        }
        let (Some(binding), Some(got_nonce)) = (binding, got_nonce) else {
            return bad("expected c=BINDING,r=NONCE");
        };
        if binding != B64.encode(gs2_header.as_bytes()) {
            return bad("channel binding does not match");
        }
        if got_nonce != nonce {
            return bad("nonce does not match");
        }
        let Ok(proof) = B64.decode(proof) else {
            return bad("proof is not base64");
        };
        let failed = || {
            ScramStep::Failed(format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                self.mechanism.name()
            ))
        };
        let Some(credential) = credential else {
            return failed();
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = self
            .mechanism
            .hmac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return failed();
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !ct_eq(&self.mechanism.hash(&client_key), &credential.stored_key) {
            return failed();
        }
        let server_signature = self
            .mechanism
            .hmac(&credential.server_key, auth_message.as_bytes());
        ScramStep::Done {
            user,
            reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 example, with the server nonce it shows.
    #[test]
    fn rfc7677_proof_verifies() {
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = Credential::from_salted(m, &salt, &salted, 4096);
        let client_first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let mut s = ScramServer::new(m);
        s.stage = Stage::Final {
            user: "user".into(),
            gs2_header: "n,,".into(),
            client_first_bare: client_first_bare.into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            credential: Some(cred),
        };
        let fin = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        match s.step(fin.as_bytes(), |_| None) {
            ScramStep::Done { user, reply } => {
                assert_eq!(user, "user");
                assert_eq!(
                    String::from_utf8(reply).unwrap(),
                    "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
                );
            }
            _ => panic!("the RFC's proof must verify"),
        }
    }

    #[test]
    fn wrong_proof_and_garbage_fail() {
        let m = Mechanism::Sha512;
        let salt = random_bytes(16);
        let salted = m.salted_password(b"right", &salt, 4096);
        let cred = Credential::from_salted(m, &salt, &salted, 4096);
        let mut s = ScramServer::new(m);
        let ScramStep::Continue(first) = s.step(b"n,,n=alice,r=abc", |_| Some(cred.clone())) else {
            panic!("first message accepted");
        };
        let first = String::from_utf8(first).unwrap();
        let nonce = first.split(',').next().unwrap().trim_start_matches("r=");
        let fin = format!("c=biws,r={nonce},p={}", B64.encode([0u8; 64]));
        assert!(matches!(
            s.step(fin.as_bytes(), |_| None),
            ScramStep::Failed(_)
        ));
        for garbage in [
            &b""[..],
            b"x",
            b"n,,",
            b"p=x,,n=a,r=b",
            b"n,,n=a",
            &[0xff, 0xfe],
        ] {
            let mut s = ScramServer::new(m);
            assert!(matches!(s.step(garbage, |_| None), ScramStep::Failed(_)));
        }
    }

    #[test]
    fn saslnames_decode() {
        assert_eq!(decode_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(decode_saslname("a=x"), None);
    }
}
