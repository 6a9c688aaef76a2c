//! The principal of a TLS client certificate, as Kafka derives it: the certificate's subject
//! distinguished name in RFC 2253 form (what Java's `X500Principal.getName()` prints,
//! `CN=client,OU=eng,O=acme,C=US`), mapped by `ssl.principal.mapping.rules`.
//!
//! The subject is read from the certificate's DER with a small reader that checks every
//! length against the bytes that remain (a certificate is the peer's input: nothing here
//! panics or allocates by a length it read). Rules are Kafka's: a comma-separated list of
//! `DEFAULT` (the whole DN) and `RULE:pattern/replacement/[LU]` (the first rule whose
//! pattern matches the whole DN gives the name, `$1` groups, `L`/`U` to lower or upper
//! case); a DN no rule matches is refused.

use regex::Regex;

/// A DER element: tag and content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// The whole element, header included.
    whole: &'a [u8],
}

/// Reads one DER element from the front of `input`, returning it and what follows.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // High tag numbers do not occur in the fields read here.
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let header = input.len() - rest.len();
    let (content, after) = rest.split_at(len);
    Some((
        Tlv {
            tag,
            content,
            whole: &input[..header + len],
        },
        after,
    ))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// The subject of a DER certificate in RFC 2253 form; `None` if the DER is not a certificate.
pub fn subject_dn(cert: &[u8]) -> Option<String> {
    let (certificate, _) = read_tlv(cert)?;
    if certificate.tag != SEQUENCE {
        return None;
    }
    let (tbs, _) = read_tlv(certificate.content)?;
    if tbs.tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs.content;
    let mut fields = Vec::with_capacity(6);
    while fields.len() < 6 && !rest.is_empty() {
        let (f, after) = read_tlv(rest)?;
        fields.push(f);
        rest = after;
    }
    // version [0] is optional: serial, signature, issuer, validity, subject follow.
    let skip = usize::from(fields.first()?.tag == 0xa0);
    let subject = fields.get(skip + 4)?;
    if subject.tag != SEQUENCE {
        return None;
    }
    name_rfc2253(subject.content)
}

/// Formats the RDN sequence of a Name: the last RDN first, as RFC 2253 writes it.
fn name_rfc2253(mut rdns: &[u8]) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    while !rdns.is_empty() {
        let (rdn, after) = read_tlv(rdns)?;
        rdns = after;
        if rdn.tag != SET {
            return None;
        }
        let mut avas = Vec::new();
        let mut rest = rdn.content;
        while !rest.is_empty() {
            let (ava, after) = read_tlv(rest)?;
            rest = after;
            if ava.tag != SEQUENCE {
                return None;
            }
            let (oid, value_rest) = read_tlv(ava.content)?;
            let (value, _) = read_tlv(value_rest)?;
            if oid.tag != OID {
                return None;
            }
            avas.push(format_ava(oid.content, &value)?);
        }
        parts.push(avas.join("+"));
    }
    parts.reverse();
    Some(parts.join(","))
}

/// The keywords RFC 2253 (and Java) print by name.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn oid_string(der: &[u8]) -> Option<String> {
    let (&first, rest) = der.split_first()?;
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut value: u64 = 0;
    for &b in rest {
        if value > (u64::MAX >> 8) {
            return None;
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            out.push_str(&format!(".{value}"));
            value = 0;
        }
    }
    Some(out)
}

/// A directory string's text, for the string types certificates use.
fn string_value(value: &Tlv<'_>) -> Option<String> {
    match value.tag {
        // UTF8String, PrintableString, IA5String, NumericString, VisibleString
        0x0c | 0x13 | 0x16 | 0x12 | 0x1a => {
            std::str::from_utf8(value.content).ok().map(str::to_string)
        }
        // TeletexString, read as Latin-1 as most decoders do.
        0x14 => Some(value.content.iter().map(|&b| char::from(b)).collect()),
        // BMPString: UCS-2 big-endian.
        0x1e if value.content.len().is_multiple_of(2) => char::decode_utf16(
            value
                .content
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        )
        .collect::<Result<String, _>>()
        .ok(),
        // UniversalString: UCS-4 big-endian.
        0x1c if value.content.len().is_multiple_of(4) => value
            .content
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        _ => None,
    }
}

fn format_ava(oid_der: &[u8], value: &Tlv<'_>) -> Option<String> {
    let oid = oid_string(oid_der)?;
    match (keyword(&oid), string_value(value)) {
        (Some(k), Some(text)) => Some(format!("{k}={}", escape(&text))),
        // Other attributes (and odd encodings) as the OID and the value's DER in hex.
        _ => {
            let hex: String = value.whole.iter().map(|b| format!("{b:02x}")).collect();
            Some(format!("{oid}=#{hex}"))
        }
    }
}

/// RFC 2253 escaping of an attribute value.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let count = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == count && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One of `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// `ssl.principal.mapping.rules`, parsed.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl PrincipalMapper {
    /// Parses Kafka's rules: `DEFAULT` and `RULE:pattern/replacement/[LU]`, comma-separated
    /// (commas inside a rule's pattern or replacement belong to it).
    pub fn parse(v: &str) -> Result<PrincipalMapper, String> {
        let mut rules = Vec::new();
        let mut rest = v.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| format!("rule '{rest}' has no '/' after its pattern"))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| format!("rule '{rest}' has no '/' after its replacement"))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let pattern = Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| format!("rule pattern '{pattern}': {e}"))?;
                rules.push(Rule::Map {
                    pattern,
                    replacement: java_replacement(&replacement),
                    case,
                });
                rest = after;
            } else {
                return Err(format!(
                    "'{rest}' is not DEFAULT or RULE:pattern/replacement/[LU]"
                ));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(format!("unexpected '{rest}' after a rule")),
            }
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for `dn`; `None` when no rule matches it.
    pub fn map(&self, dn: &str) -> Option<String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Some(dn.to_string()),
                Rule::Map {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(dn) {
                        let out = pattern.replace_all(dn, replacement.as_str()).into_owned();
                        return Some(match case {
                            Some('L') => out.to_lowercase(),
                            Some('U') => out.to_uppercase(),
                            _ => out,
                        });
                    }
                }
            }
        }
        None
    }
}

/// Reads up to the next unescaped '/', unescaping `\/`.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '/')) => out.push('/'),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// Java's `$1` group references, written so the regex crate reads them the same (`${1}`).
fn java_replacement(r: &str) -> String {
    let mut out = String::new();
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            '\\' => {
                if let Some(n) = chars.next() {
                    if n == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(n);
                    }
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built DER certificate shell whose subject is the given RDNs (type OID bytes,
    /// string tag, value); only the fields read are meaningful.
    fn cert_with_subject(rdns: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if content.len() < 0x80 {
                out.push(content.len() as u8);
            } else {
                out.push(0x82);
                out.extend_from_slice(&(content.len() as u16).to_be_bytes());
            }
            out.extend_from_slice(content);
            out
        }
        let mut name = Vec::new();
        for (oid, tag, value) in rdns {
            let ava = [tlv(OID, oid), tlv(*tag, value)].concat();
            name.extend(tlv(SET, &tlv(SEQUENCE, &ava)));
        }
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            tlv(SEQUENCE, &tlv(OID, &[0x2a, 0x86, 0x48])),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &name),
        ]
        .concat();
        tlv(SEQUENCE, &tlv(SEQUENCE, &tbs))
    }

    const C: &[u8] = &[0x55, 0x04, 0x06];
    const O: &[u8] = &[0x55, 0x04, 0x0a];
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];

    #[test]
    fn subject_in_rfc2253_order_with_escapes() {
        let der = cert_with_subject(&[
            (C, 0x13, b"US"),
            (O, 0x0c, b"Acme, Inc"),
            (CN, 0x0c, b"client-1"),
        ]);
        assert_eq!(subject_dn(&der).unwrap(), "CN=client-1,O=Acme\\, Inc,C=US");
        let der = cert_with_subject(&[(EMAIL, 0x16, b"a@b"), (CN, 0x0c, b" x ")]);
        assert_eq!(
            subject_dn(&der).unwrap(),
            "CN=\\ x\\ ,1.2.840.113549.1.9.1=#1603614062"
        );
    }

    #[test]
    fn malformed_der_is_refused_without_panicking() {
        let der = cert_with_subject(&[(CN, 0x0c, b"client")]);
        for cut in 0..der.len() {
            let _ = subject_dn(&der[..cut]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = subject_dn(&bad);
        }
        assert_eq!(subject_dn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(subject_dn(&[]), None);
    }

    #[test]
    fn mapping_rules_as_kafka_applies_them() {
        let dn = "CN=kafka-client,OU=ServiceUsers,O=Acme,C=US";
        assert_eq!(
            PrincipalMapper::parse("DEFAULT").unwrap().map(dn).unwrap(),
            dn
        );
        assert_eq!(PrincipalMapper::parse("").unwrap().map(dn).unwrap(), dn);
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/U, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(m.map(dn).unwrap(), "KAFKA-CLIENT");
        assert_eq!(
            m.map("CN=Bob,OU=Eng,O=Acme,L=Paris,ST=IdF,C=FR").unwrap(),
            "bob@eng"
        );
        assert_eq!(m.map("CN=other,O=x").unwrap(), "CN=other,O=x");
        let only = PrincipalMapper::parse("RULE:^CN=([^,]*),.*$/$1/").unwrap();
        assert_eq!(only.map(dn).unwrap(), "kafka-client");
        assert_eq!(only.map("O=none"), None);
        let slash = PrincipalMapper::parse(r"RULE:^CN=(.*)$/svc\/$1/").unwrap();
        assert_eq!(slash.map("CN=a").unwrap(), "svc/a");
        assert!(PrincipalMapper::parse("RULE:^CN=(.*)$").is_err());
        assert!(PrincipalMapper::parse("NOPE").is_err());
        assert!(PrincipalMapper::parse("RULE:(/x/").is_err());
    }
}
