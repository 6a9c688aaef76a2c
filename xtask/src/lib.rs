//! The Kafka codec generator behind `cargo xtask codegen`.
//!
//! It reads Kafka's JSON message specs (JSON with `//` comments), builds a small model of every
//! message (versions, nullability, tagged fields, defaults, nested and common structs) and
//! emits one Rust module per message plus a `mod.rs` holding `ApiKey` and the request/response
//! dispatch enums. The output is formatted with `rustfmt` so that it is byte-for-byte
//! reproducible, which is what the staleness test relies on.
//!
//! The same generator also reads Kafka's KRaft metadata record specs (`"type": "metadata"`,
//! same JSON schema) and emits one module per record plus a `mod.rs` holding
//! `MetadataRecordType` and the `MetadataRecord` enum with its framed encoding (unsigned varint
//! record type, unsigned varint version, body), see [`generate_metadata_records`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The generated files, by file name (e.g. `produce_request.rs`), already formatted.
pub type GeneratedFiles = BTreeMap<String, String>;

/// The crate-relative directory the generated modules live in.
pub const GENERATED_DIR: &str = "crates/skein-protocol/src/generated";

/// The workspace root (the parent of the `xtask` package).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// The default location of the specs: `../shared/kafka-message-specs` from the workspace root.
pub fn default_specs_dir() -> PathBuf {
    workspace_root().join("../shared/kafka-message-specs")
}

/// The crate-relative directory the generated KRaft metadata records live in.
pub const METADATA_RECORDS_DIR: &str = "crates/skein-protocol/src/metadata_records";

/// The default location of the metadata record specs:
/// `../shared/kafka-record-specs/metadata` from the workspace root.
pub fn default_record_specs_dir() -> PathBuf {
    workspace_root().join("../shared/kafka-record-specs/metadata")
}

// ---------------------------------------------------------------------------------------------
// Parsing.

/// Removes `//` comments, leaving `//` inside string literals (URLs in "about") alone.
pub fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(escaped) = chars.next() {
                    out.push(escaped);
                }
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for skipped in chars.by_ref() {
                if skipped == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An inclusive version range; empty when `lo > hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub lo: i16,
    pub hi: i16,
}

impl Versions {
    const NONE: Versions = Versions { lo: 1, hi: 0 };

    fn parse(s: &str) -> Result<Versions, String> {
        let s = s.trim();
        let num = |t: &str| {
            t.trim()
                .parse::<i16>()
                .map_err(|e| format!("bad version {s:?}: {e}"))
        };
        if s == "none" {
            Ok(Versions::NONE)
        } else if let Some(lo) = s.strip_suffix('+') {
            Ok(Versions {
                lo: num(lo)?,
                hi: i16::MAX,
            })
        } else if let Some((lo, hi)) = s.split_once('-') {
            Ok(Versions {
                lo: num(lo)?,
                hi: num(hi)?,
            })
        } else {
            let v = num(s)?;
            Ok(Versions { lo: v, hi: v })
        }
    }

    fn is_empty(self) -> bool {
        self.lo > self.hi
    }

    fn intersect(self, other: Versions) -> Versions {
        Versions {
            lo: self.lo.max(other.lo),
            hi: self.hi.min(other.hi),
        }
    }

    fn describe(self) -> String {
        if self.is_empty() {
            "none".to_string()
        } else if self.hi == i16::MAX {
            format!("{}+", self.lo)
        } else if self.lo == self.hi {
            format!("{}", self.lo)
        } else {
            format!("{}-{}", self.lo, self.hi)
        }
    }
}

/// A field type from the spec.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Uint16,
    Uint32,
    Float64,
    Str,
    Bytes,
    Records,
    Uuid,
    Struct(String),
    Array(Box<Ty>),
}

impl Ty {
    fn parse(s: &str) -> Ty {
        if let Some(inner) = s.strip_prefix("[]") {
            return Ty::Array(Box::new(Ty::parse(inner)));
        }
        match s {
            "bool" => Ty::Bool,
            "int8" => Ty::Int8,
            "int16" => Ty::Int16,
            "int32" => Ty::Int32,
            "int64" => Ty::Int64,
            "uint16" => Ty::Uint16,
            "uint32" => Ty::Uint32,
            "float64" => Ty::Float64,
            "string" => Ty::Str,
            "bytes" => Ty::Bytes,
            "records" => Ty::Records,
            "uuid" => Ty::Uuid,
            other => Ty::Struct(other.to_string()),
        }
    }

    /// The Rust type of a non-null value.
    fn rust(&self) -> String {
        match self {
            Ty::Bool => "bool".into(),
            Ty::Int8 => "i8".into(),
            Ty::Int16 => "i16".into(),
            Ty::Int32 => "i32".into(),
            Ty::Int64 => "i64".into(),
            Ty::Uint16 => "u16".into(),
            Ty::Uint32 => "u32".into(),
            Ty::Float64 => "f64".into(),
            Ty::Str => "String".into(),
            Ty::Bytes | Ty::Records => "Bytes".into(),
            Ty::Uuid => "Uuid".into(),
            Ty::Struct(name) => name.clone(),
            Ty::Array(inner) => format!("Vec<{}>", inner.rust()),
        }
    }

    /// The codec function suffix for fixed-width primitives.
    fn primitive(&self) -> Option<&'static str> {
        Some(match self {
            Ty::Bool => "bool",
            Ty::Int8 => "i8",
            Ty::Int16 => "i16",
            Ty::Int32 => "i32",
            Ty::Int64 => "i64",
            Ty::Uint16 => "u16",
            Ty::Uint32 => "u32",
            Ty::Float64 => "f64",
            Ty::Uuid => "uuid",
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: Ty,
    versions: Versions,
    nullable: Versions,
    tagged: Versions,
    tag: Option<u32>,
    /// Overrides the message's flexible versions (only `RequestHeader.ClientId` uses this).
    flexible: Option<Versions>,
    default: Option<String>,
    about: String,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
struct StructDef {
    name: String,
    about: String,
    fields: Vec<Field>,
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    kind: String,
    api_key: Option<i16>,
    valid: Versions,
    flexible: Versions,
    listeners: Vec<String>,
    latest_unstable: bool,
    /// The message struct first, then nested and common structs.
    structs: Vec<StructDef>,
}

fn str_field<'a>(obj: &'a Value, key: &str, ctx: &str) -> Result<&'a str, String> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{ctx}: missing string {key:?}"))
}

fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parse_field(obj: &Value, ctx: &str) -> Result<Field, String> {
    let name = str_field(obj, "name", ctx)?.to_string();
    let ctx = format!("{ctx}.{name}");
    let ty = Ty::parse(str_field(obj, "type", &ctx)?);
    let versions = Versions::parse(str_field(obj, "versions", &ctx)?)?;
    let opt_versions = |key: &str| -> Result<Option<Versions>, String> {
        obj.get(key)
            .and_then(Value::as_str)
            .map(Versions::parse)
            .transpose()
    };
    let nullable = opt_versions("nullableVersions")?.unwrap_or(Versions::NONE);
    let tagged = opt_versions("taggedVersions")?.unwrap_or(Versions::NONE);
    let flexible = opt_versions("flexibleVersions")?;
    let tag = match obj.get("tag") {
        None => None,
        Some(v) => Some(
            value_to_string(v)
                .parse::<u32>()
                .map_err(|e| format!("{ctx}: bad tag: {e}"))?,
        ),
    };
    let default = obj.get("default").map(value_to_string);
    let about = obj
        .get("about")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let fields = match obj.get("fields").and_then(Value::as_array) {
        Some(list) => list
            .iter()
            .map(|f| parse_field(f, &ctx))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(Field {
        name,
        ty,
        versions,
        nullable,
        tagged,
        tag,
        flexible,
        default,
        about,
        fields,
    })
}

fn collect_structs(fields: &[Field], out: &mut Vec<StructDef>, ctx: &str) -> Result<(), String> {
    for field in fields {
        let struct_name = match &field.ty {
            Ty::Struct(n) => Some(n),
            Ty::Array(inner) => match &**inner {
                Ty::Struct(n) => Some(n),
                _ => None,
            },
            _ => None,
        };
        let Some(struct_name) = struct_name else {
            continue;
        };
        if field.fields.is_empty() {
            continue; // A reference to a struct defined elsewhere (often a common struct).
        }
        if out.iter().any(|s| &s.name == struct_name) {
            return Err(format!("{ctx}: struct {struct_name} defined twice"));
        }
        out.push(StructDef {
            name: struct_name.clone(),
            about: field.about.clone(),
            fields: field.fields.clone(),
        });
        collect_structs(&field.fields, out, ctx)?;
    }
    Ok(())
}

fn parse_spec(src: &str, file: &str) -> Result<Spec, String> {
    let json: Value =
        serde_json::from_str(&strip_comments(src)).map_err(|e| format!("{file}: {e}"))?;
    let name = str_field(&json, "name", file)?.to_string();
    let kind = str_field(&json, "type", file)?.to_string();
    let api_key = json
        .get("apiKey")
        .and_then(Value::as_i64)
        .map(|k| i16::try_from(k).map_err(|_| format!("{file}: bad apiKey")))
        .transpose()?;
    let valid = Versions::parse(str_field(&json, "validVersions", file)?)?;
    let flexible = Versions::parse(str_field(&json, "flexibleVersions", file)?)?;
    let listeners = json
        .get("listeners")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let latest_unstable = json
        .get("latestVersionUnstable")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fields: Vec<Field> = json
        .get("fields")
        .and_then(Value::as_array)
        .map(|list| list.iter().map(|f| parse_field(f, &name)).collect())
        .transpose()?
        .unwrap_or_default();
    let about = match api_key {
        Some(k) => format!("The {name} message (api key {k})."),
        None => format!("The {name} message."),
    };
    let mut structs = vec![StructDef {
        name: name.clone(),
        about,
        fields: fields.clone(),
    }];
    collect_structs(&fields, &mut structs, &name)?;
    if let Some(common) = json.get("commonStructs").and_then(Value::as_array) {
        for cs in common {
            let cs_name = str_field(cs, "name", file)?.to_string();
            let cs_fields: Vec<Field> = cs
                .get("fields")
                .and_then(Value::as_array)
                .map(|list| list.iter().map(|f| parse_field(f, &cs_name)).collect())
                .transpose()?
                .unwrap_or_default();
            if structs.iter().any(|s| s.name == cs_name) {
                return Err(format!("{file}: struct {cs_name} defined twice"));
            }
            structs.push(StructDef {
                name: cs_name.clone(),
                about: format!("The common struct {cs_name}."),
                fields: cs_fields.clone(),
            });
            collect_structs(&cs_fields, &mut structs, &name)?;
        }
    }
    // Every referenced struct must be defined.
    for s in &structs {
        for f in &s.fields {
            let referenced = match &f.ty {
                Ty::Struct(n) => Some(n),
                Ty::Array(inner) => match &**inner {
                    Ty::Struct(n) => Some(n),
                    _ => None,
                },
                _ => None,
            };
            if let Some(r) = referenced {
                if !structs.iter().any(|d| &d.name == r) {
                    return Err(format!("{file}: struct {r} is referenced but not defined"));
                }
            }
        }
    }
    Ok(Spec {
        name,
        kind,
        api_key,
        valid,
        flexible,
        listeners,
        latest_unstable,
        structs,
    })
}

// ---------------------------------------------------------------------------------------------
// Naming.

/// `ProduceRequest` -> `produce_request`, `V3AndBelowTopics` -> `v3_and_below_topics`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "gen", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

fn field_ident(name: &str) -> String {
    let snake = snake_case(name);
    if RUST_KEYWORDS.contains(&snake.as_str()) {
        format!("r#{snake}")
    } else {
        snake
    }
}

/// A `///` line from spec prose, escaped so that rustdoc reads it as plain text.
fn doc(text: &str) -> String {
    let text = text
        .split_whitespace()
        .map(|word| {
            if word.starts_with("http://") || word.starts_with("https://") {
                let url = word.trim_end_matches(['.', ',', ')']);
                format!("<{url}>{}", &word[url.len()..])
            } else {
                word.replace('[', "\\[")
                    .replace(']', "\\]")
                    .replace('<', "\\<")
                    .replace('>', "\\>")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        String::new()
    } else {
        format!("/// {text}\n")
    }
}

// ---------------------------------------------------------------------------------------------
// Code generation.

/// Renders a version condition on the variable `version`, given the versions the code can run
/// at. `None` means always true.
fn cond(r: Versions, valid: Versions) -> Cond {
    let r = r.intersect(valid);
    if r.is_empty() {
        return Cond::Never;
    }
    match (r.lo > valid.lo, r.hi < valid.hi) {
        (false, false) => Cond::Always,
        (true, false) => Cond::When(format!("version >= {}", r.lo)),
        (false, true) => Cond::When(format!("version <= {}", r.hi)),
        (true, true) if r.lo == r.hi => Cond::When(format!("version == {}", r.lo)),
        (true, true) => Cond::When(format!("({}..={}).contains(&version)", r.lo, r.hi)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Cond {
    Always,
    Never,
    When(String),
}

impl Cond {
    /// As a boolean expression.
    fn expr(&self) -> String {
        match self {
            Cond::Always => "true".into(),
            Cond::Never => "false".into(),
            Cond::When(e) => e.clone(),
        }
    }

    /// Wraps `body` in an `if` as needed; `Never` yields nothing.
    fn guard(&self, body: &str) -> String {
        match self {
            Cond::Always => body.to_string(),
            Cond::Never => String::new(),
            Cond::When(e) => format!("if {e} {{\n{body}}}\n"),
        }
    }

    fn and(&self, other: &Cond) -> Cond {
        match (self, other) {
            (Cond::Never, _) | (_, Cond::Never) => Cond::Never,
            (Cond::Always, c) | (c, Cond::Always) => c.clone(),
            (Cond::When(a), Cond::When(b)) => Cond::When(format!("{a} && {b}")),
        }
    }
}

/// The versions in which a field is written in the body rather than as a tagged field.
fn untagged_versions(f: &Field) -> Result<Versions, String> {
    if f.tag.is_none() || f.tagged.is_empty() {
        return Ok(f.versions);
    }
    // Tagged versions are open-ended, so what remains is a prefix of the field's versions.
    if f.tagged.hi != i16::MAX {
        return Err(format!("{}: taggedVersions must be open-ended", f.name));
    }
    Ok(Versions {
        lo: f.versions.lo,
        hi: f.versions.hi.min(f.tagged.lo - 1),
    })
}

struct Gen<'a> {
    spec: &'a Spec,
}

impl Gen<'_> {
    /// Whether a field's Rust type is an `Option`.
    fn is_option(&self, f: &Field) -> bool {
        match f.ty {
            Ty::Records => true,
            Ty::Str | Ty::Bytes | Ty::Struct(_) | Ty::Array(_) => {
                !f.nullable.intersect(self.spec.valid).is_empty()
            }
            _ => false,
        }
    }

    fn field_type(&self, f: &Field) -> String {
        if self.is_option(f) {
            format!("Option<{}>", f.ty.rust())
        } else {
            f.ty.rust()
        }
    }

    fn default_expr(&self, f: &Field) -> Result<String, String> {
        let d = f.default.as_deref();
        let ctx = || format!("{}.{}", self.spec.name, f.name);
        let int = |d: Option<&str>| -> Result<String, String> {
            let Some(d) = d else {
                return Ok("0".into());
            };
            let d = d.trim();
            let (neg, body) = match d.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, d),
            };
            let v = if let Some(hex) = body.strip_prefix("0x").or(body.strip_prefix("0X")) {
                i64::from_str_radix(hex, 16)
            } else {
                body.parse::<i64>()
            }
            .map_err(|e| format!("{}: bad default {d:?}: {e}", ctx()))?;
            Ok(format!("{}", if neg { -v } else { v }))
        };
        let opt = self.is_option(f);
        let wrap = |e: String| if opt { format!("Some({e})") } else { e };
        Ok(match &f.ty {
            Ty::Int8 | Ty::Int16 | Ty::Int32 | Ty::Int64 | Ty::Uint16 | Ty::Uint32 => int(d)?,
            Ty::Float64 => match d {
                None => "0.0".into(),
                Some(s) => {
                    let v: f64 = s
                        .trim()
                        .parse()
                        .map_err(|e| format!("{}: bad default: {e}", ctx()))?;
                    format!("{v:?}")
                }
            },
            Ty::Bool => match d.map(str::trim) {
                None | Some("false") => "false".into(),
                Some("true") => "true".into(),
                Some(other) => return Err(format!("{}: bad bool default {other:?}", ctx())),
            },
            Ty::Records => "None".into(),
            Ty::Uuid => "Uuid::ZERO".into(),
            _ if opt && d == Some("null") => "None".into(),
            Ty::Str => match d {
                None | Some("") => wrap("String::new()".into()),
                Some(s) => wrap(format!("String::from({s:?})")),
            },
            Ty::Bytes => wrap("Bytes::new()".into()),
            Ty::Struct(n) => wrap(format!("{n}::default()")),
            Ty::Array(_) => wrap("Vec::new()".into()),
        })
    }

    fn flex_expr(&self, f: &Field) -> String {
        match f.flexible {
            Some(v) => cond(v, self.spec.valid).expr(),
            None => "flexible".into(),
        }
    }

    /// The Rust expression for `field`'s name as a string literal.
    fn field_lit(&self, f: &Field) -> String {
        format!("{:?}", f.name)
    }

    /// Statement(s) appending `self.<field>` to `buf`.
    fn encode_field(&self, f: &Field) -> String {
        let id = field_ident(&f.name);
        let flex = self.flex_expr(f);
        let name = self.field_lit(f);
        let nullable = cond(f.nullable, self.spec.valid).expr();
        let opt = self.is_option(f);
        if let Some(p) = f.ty.primitive() {
            return format!("c::put_{p}(buf, self.{id});\n");
        }
        match &f.ty {
            Ty::Str if opt => format!(
                "c::put_opt_string(buf, self.{id}.as_deref(), {flex}, {nullable}, {name})?;\n"
            ),
            Ty::Str => format!("c::put_string(buf, &self.{id}, {flex}, {name})?;\n"),
            Ty::Bytes if opt => format!(
                "c::put_opt_bytes(buf, self.{id}.as_deref(), {flex}, {nullable}, {name})?;\n"
            ),
            Ty::Bytes => format!("c::put_bytes(buf, &self.{id}, {flex}, {name})?;\n"),
            Ty::Records if opt => format!(
                "c::put_opt_records(buf, self.{id}.as_deref(), {flex}, {nullable}, {name})?;\n"
            ),
            Ty::Records => format!("c::put_records(buf, &self.{id}, {flex}, {name})?;\n"),
            Ty::Struct(_) if opt => format!(
                "c::put_opt_struct(buf, self.{id}.as_ref(), version, {nullable}, {name})?;\n"
            ),
            Ty::Struct(_) => format!("self.{id}.encode(buf, version)?;\n"),
            Ty::Array(inner) => {
                let elem = self.encode_elem(inner, &flex, &name);
                if opt {
                    format!(
                        "c::put_opt_array(buf, self.{id}.as_deref(), {flex}, {nullable}, {name}, |buf, e| {elem})?;\n"
                    )
                } else {
                    format!("c::put_array(buf, &self.{id}, {flex}, {name}, |buf, e| {elem})?;\n")
                }
            }
            _ => unreachable!("primitives handled above"),
        }
    }

    fn encode_elem(&self, ty: &Ty, flex: &str, name: &str) -> String {
        if let Some(p) = ty.primitive() {
            return format!("{{ c::put_{p}(buf, *e); Ok(()) }}");
        }
        match ty {
            Ty::Str => format!("c::put_string(buf, e, {flex}, {name})"),
            Ty::Bytes | Ty::Records => format!("c::put_bytes(buf, e, {flex}, {name})"),
            Ty::Struct(_) => "e.encode(buf, version)".into(),
            Ty::Array(_) => panic!("{}: arrays of arrays are not supported", self.spec.name),
            _ => unreachable!(),
        }
    }

    /// An expression decoding the field from `buf`.
    fn decode_field(&self, f: &Field) -> String {
        let flex = self.flex_expr(f);
        let name = self.field_lit(f);
        let nullable = cond(f.nullable, self.spec.valid).expr();
        let opt = self.is_option(f);
        if let Some(p) = f.ty.primitive() {
            return format!("c::get_{p}(buf)?");
        }
        match &f.ty {
            Ty::Str if opt => format!("c::get_opt_string(buf, {flex}, {nullable}, {name})?"),
            Ty::Str => format!("c::get_string(buf, {flex}, {name})?"),
            Ty::Bytes | Ty::Records if opt => {
                format!("c::get_opt_bytes(buf, {flex}, {nullable}, {name})?")
            }
            Ty::Bytes | Ty::Records => format!("c::get_bytes(buf, {flex}, {name})?"),
            Ty::Struct(_) if opt => format!("c::get_opt_struct(buf, version, {nullable})?"),
            Ty::Struct(n) => format!("{n}::decode(buf, version)?"),
            Ty::Array(inner) => {
                let elem = self.decode_elem(inner, &flex, &name);
                if opt {
                    format!("c::get_opt_array(buf, {flex}, {nullable}, {name}, {elem})?")
                } else {
                    format!("c::get_array(buf, {flex}, {name}, {elem})?")
                }
            }
            _ => unreachable!("primitives handled above"),
        }
    }

    fn decode_elem(&self, ty: &Ty, flex: &str, name: &str) -> String {
        if let Some(p) = ty.primitive() {
            return format!("c::get_{p}");
        }
        match ty {
            Ty::Str => format!("|buf| c::get_string(buf, {flex}, {name})"),
            Ty::Bytes | Ty::Records => format!("|buf| c::get_bytes(buf, {flex}, {name})"),
            Ty::Struct(n) => format!("|buf| {n}::decode(buf, version)"),
            Ty::Array(_) => panic!("{}: arrays of arrays are not supported", self.spec.name),
            _ => unreachable!(),
        }
    }

    /// An expression producing a random value for the field.
    fn random_field(&self, f: &Field) -> String {
        let nullable = cond(f.nullable, self.spec.valid).expr();
        let opt = self.is_option(f);
        let base = self.random_ty(&f.ty);
        if opt {
            format!("rng.opt({nullable}, |rng| {base})")
        } else {
            base
        }
    }

    fn random_ty(&self, ty: &Ty) -> String {
        match ty {
            Ty::Str => "rng.string()".into(),
            Ty::Bytes | Ty::Records => "rng.bytes()".into(),
            Ty::Struct(n) => format!("{n}::random(rng, version, depth + 1)"),
            Ty::Array(inner) => format!("rng.vec(depth, |rng| {})", self.random_ty(inner)),
            other => format!("<{} as Random>::random(rng, version, depth)", other.rust()),
        }
    }

    fn gen_struct(&self, s: &StructDef, out: &mut String) -> Result<(), String> {
        let valid = self.spec.valid;
        let flexible = cond(self.spec.flexible, valid);
        let name = &s.name;

        // Declaration.
        // Derive `Default` unless some field has a custom default from the spec.
        let mut custom_default = false;
        for f in &s.fields {
            let d = self.default_expr(f)?;
            let natural = [
                "0",
                "0.0",
                "false",
                "None",
                "String::new()",
                "Bytes::new()",
                "Vec::new()",
                "Uuid::ZERO",
            ];
            let struct_default = d.ends_with("::default()") && !d.starts_with("Some(");
            if !natural.contains(&d.as_str()) && !struct_default {
                custom_default = true;
            }
        }
        out.push_str(&doc(&s.about));
        if custom_default {
            out.push_str("#[derive(Debug, Clone, PartialEq)]\n");
        } else {
            out.push_str("#[derive(Debug, Clone, PartialEq, Default)]\n");
        }
        writeln!(out, "pub struct {name} {{").unwrap();
        for f in &s.fields {
            let mut about = f.about.clone();
            let mut notes = vec![format!("versions {}", f.versions.describe())];
            if !f.nullable.is_empty() {
                notes.push(format!("nullable {}", f.nullable.describe()));
            }
            if let Some(tag) = f.tag {
                notes.push(format!("tag {tag} in {}", f.tagged.describe()));
            }
            if let Some(d) = &f.default {
                notes.push(format!("default {d}"));
            }
            write!(about, " ({})", notes.join(", ")).unwrap();
            out.push_str(&doc(&about));
            writeln!(out, "pub {}: {},", field_ident(&f.name), self.field_type(f)).unwrap();
        }
        out.push_str(
            "/// Tagged fields this version of Skein does not know, kept so they survive a round trip.\n",
        );
        out.push_str("pub unknown_tagged_fields: Vec<(u32, Bytes)>,\n}\n\n");

        // Default.
        if custom_default {
            writeln!(
                out,
                "impl Default for {name} {{\nfn default() -> Self {{\nSelf {{"
            )
            .unwrap();
            for f in &s.fields {
                writeln!(out, "{}: {},", field_ident(&f.name), self.default_expr(f)?).unwrap();
            }
            out.push_str("unknown_tagged_fields: Vec::new(),\n}\n}\n}\n\n");
        }

        // Tagged fields in ascending tag order.
        let mut tagged: Vec<&Field> = s.fields.iter().filter(|f| f.tag.is_some()).collect();
        tagged.sort_by_key(|f| f.tag);

        // Decode.
        writeln!(
            out,
            "impl Decode for {name} {{\nfn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError> {{"
        )
        .unwrap();
        writeln!(out, "let flexible = {};", flexible.expr()).unwrap();
        out.push_str("let mut this = Self::default();\n");
        for f in &s.fields {
            let present = cond(untagged_versions(f)?, valid);
            let stmt = format!(
                "this.{} = {};\n",
                field_ident(&f.name),
                self.decode_field(f)
            );
            out.push_str(&present.guard(&stmt));
        }
        if flexible != Cond::Never {
            let mut arms = String::new();
            for f in &tagged {
                // Inside the tagged section the version is known to be flexible.
                let tc = cond(
                    f.tagged.intersect(f.versions),
                    self.spec.flexible.intersect(valid),
                );
                let guard = match tc {
                    Cond::Never => continue,
                    Cond::Always => String::new(),
                    Cond::When(e) => format!(" if {e}"),
                };
                writeln!(
                    arms,
                    "{}{guard} => {{\nlet buf = &mut data;\nthis.{} = {};\nc::expect_consumed(buf)?;\n}}",
                    f.tag.unwrap(),
                    field_ident(&f.name),
                    self.decode_field(f)
                )
                .unwrap();
            }
            let body = if arms.is_empty() {
                "c::get_tagged_fields(buf, |tag, data| {\nthis.unknown_tagged_fields.push((tag, data));\nOk(())\n})?;\n".to_string()
            } else {
                format!("c::get_tagged_fields(buf, |tag, mut data| {{\nmatch tag {{\n{arms}_ => this.unknown_tagged_fields.push((tag, data)),\n}}\nOk(())\n}})?;\n")
            };
            out.push_str(&flexible.guard(&body));
        }
        out.push_str("Ok(this)\n}\n}\n\n");

        // Encode.
        writeln!(
            out,
            "impl Encode for {name} {{\nfn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{"
        )
        .unwrap();
        writeln!(out, "let flexible = {};", flexible.expr()).unwrap();
        for f in &s.fields {
            let present = cond(untagged_versions(f)?, valid);
            out.push_str(&present.guard(&self.encode_field(f)));
        }
        if flexible != Cond::Never {
            let mut body = String::from("let mut tagged = c::TaggedFields::new();\n");
            for f in &tagged {
                // Inside the tagged section the version is known to be flexible.
                let tc = cond(
                    f.tagged.intersect(f.versions),
                    self.spec.flexible.intersect(valid),
                );
                if tc == Cond::Never {
                    continue;
                }
                let id = field_ident(&f.name);
                let differs = Cond::When(match self.default_expr(f)?.as_str() {
                    "false" => format!("self.{id}"),
                    "true" => format!("!self.{id}"),
                    "None" => format!("self.{id}.is_some()"),
                    "Vec::new()" => format!("!self.{id}.is_empty()"),
                    d => format!("self.{id} != {d}"),
                });
                let push = format!(
                    "tagged.push({}, |buf| {{\n{}Ok(())\n}})?;\n",
                    f.tag.unwrap(),
                    self.encode_field(f)
                );
                body.push_str(&tc.and(&differs).guard(&push));
            }
            body.push_str("tagged.write(buf, &self.unknown_tagged_fields)?;\n");
            out.push_str(&flexible.guard(&body));
        }
        out.push_str("Ok(())\n}\n}\n\n");

        // Random values for tests.
        writeln!(
            out,
            "#[cfg(any(test, feature = \"testing\"))]\nimpl Random for {name} {{\nfn random(rng: &mut Rng, version: i16, depth: u32) -> Self {{"
        )
        .unwrap();
        writeln!(out, "let flexible = {};", flexible.expr()).unwrap();
        out.push_str("let mut this = Self::default();\n");
        for f in &s.fields {
            let stmt = format!(
                "this.{} = {};\n",
                field_ident(&f.name),
                self.random_field(f)
            );
            out.push_str(&cond(f.versions, valid).guard(&stmt));
        }
        out.push_str(
            "if flexible && rng.chance(4) {\nthis.unknown_tagged_fields = rng.unknown_tagged_fields();\n}\nthis\n}\n}\n\n",
        );
        Ok(())
    }

    fn gen_file(&self) -> Result<String, String> {
        let spec = self.spec;
        let mut out = String::new();
        writeln!(
            out,
            "//! `{}`: {} versions {}, flexible {}.\n//!\n//! Generated by `cargo xtask codegen` from Kafka's `{}.json`; do not edit.\n",
            spec.name,
            spec.kind,
            spec.valid.describe(),
            spec.flexible.describe(),
            spec.name
        )
        .unwrap();
        for name in [
            "Bytes", "BytesMut", "Uuid", "Random", "Rng", "Decode", "Encode", "c",
        ] {
            if spec.structs.iter().any(|s| s.name == name) {
                return Err(format!(
                    "{}: struct name {name} clashes with an import",
                    spec.name
                ));
            }
        }
        let mut body = String::new();
        for s in &spec.structs {
            self.gen_struct(s, &mut body)?;
        }
        // Import only what the code uses, so that no lint needs silencing.
        let code: String = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("///"))
            .collect();
        out.push_str("use bytes::{Bytes, BytesMut};\n\n");
        if code.contains("c::") {
            out.push_str(
                "use crate::codec::{self as c, Decode, DecodeError, Encode, EncodeError};\n",
            );
        } else {
            out.push_str("use crate::codec::{Decode, DecodeError, Encode, EncodeError};\n");
        }
        out.push_str("#[cfg(any(test, feature = \"testing\"))]\n");
        out.push_str("use crate::testing::{Random, Rng};\n");
        if code.contains("Uuid") {
            out.push_str("use crate::Uuid;\n");
        }
        out.push('\n');
        out.push_str(&body);
        Ok(out)
    }
}

struct Api {
    /// `Produce`.
    variant: String,
    key: i16,
    request: Spec,
    response: Spec,
}

fn gen_mod(specs: &[Spec], apis: &[Api]) -> String {
    let mut out = String::new();
    out.push_str(
        "//! Every Kafka message, one module per spec file, plus `ApiKey` and the request and\n//! response dispatch enums.\n//!\n//! Generated by `cargo xtask codegen`; do not edit.\n\n",
    );
    out.push_str("#![allow(\n    unused_variables,\n    unused_mut,\n    clippy::field_reassign_with_default,\n    clippy::large_enum_variant\n)]\n\n");
    out.push_str("use bytes::{Bytes, BytesMut};\n\n");
    out.push_str("use crate::codec::{Decode, DecodeError, Encode, EncodeError};\n");
    out.push_str("#[cfg(any(test, feature = \"testing\"))]\n");
    out.push_str("use crate::testing::{Random, Rng};\n\n");
    for s in specs {
        writeln!(out, "pub mod {};", snake_case(&s.name)).unwrap();
    }
    out.push('\n');
    for s in specs {
        writeln!(out, "pub use {}::{};", snake_case(&s.name), s.name).unwrap();
    }
    out.push('\n');

    // ApiKey.
    out.push_str("/// A Kafka API, by its key.\n");
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i16)]\npub enum ApiKey {\n");
    for a in apis {
        writeln!(out, "{} = {},", a.variant, a.key).unwrap();
    }
    out.push_str("}\n\n");

    let arms = |f: &dyn Fn(&Api) -> String| -> String {
        apis.iter()
            .map(|a| format!("ApiKey::{} => {},\n", a.variant, f(a)))
            .collect()
    };
    out.push_str("impl ApiKey {\n");
    writeln!(
        out,
        "/// The API with this key, if Skein knows it.\npub fn from_i16(key: i16) -> Option<ApiKey> {{\nmatch key {{\n{}_ => None,\n}}\n}}\n",
        apis.iter()
            .map(|a| format!("{} => Some(ApiKey::{}),\n", a.key, a.variant))
            .collect::<String>()
    )
    .unwrap();
    writeln!(
        out,
        "/// The API's name, as in the specs without the `Request` suffix.\npub fn name(self) -> &'static str {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|a| format!("{:?}", a.variant))
    )
    .unwrap();
    writeln!(
        out,
        "/// The versions the codec supports, inclusive.\npub fn valid_versions(self) -> (i16, i16) {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|a| format!("({}, {})", a.request.valid.lo, a.request.valid.hi))
    )
    .unwrap();
    writeln!(
        out,
        "/// The first flexible version (compact encodings and tagged fields), if any.\npub fn flexible_min(self) -> Option<i16> {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|a| {
            let f = a.request.flexible.intersect(a.request.valid);
            if f.is_empty() {
                "None".into()
            } else {
                format!("Some({})", f.lo)
            }
        })
    )
    .unwrap();
    writeln!(
        out,
        "/// True when the spec marks the latest version as unstable (not to be advertised by default).\npub fn latest_version_unstable(self) -> bool {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|a| format!("{}", a.request.latest_unstable))
    )
    .unwrap();
    writeln!(
        out,
        "/// The listeners the spec says the API is served on (`broker`, `controller`, `zkBroker`).\npub fn listeners(self) -> &'static [&'static str] {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|a| format!(
            "&[{}]",
            a.request
                .listeners
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    )
    .unwrap();
    writeln!(
        out,
        "/// Every API, in key order.\npub fn all() -> &'static [ApiKey] {{\n&[{}]\n}}\n",
        apis.iter()
            .map(|a| format!("ApiKey::{}", a.variant))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    out.push_str(
        "/// True when `version` is within `valid_versions`.\npub fn supports(self, version: i16) -> bool {\nlet (lo, hi) = self.valid_versions();\n(lo..=hi).contains(&version)\n}\n\n",
    );
    out.push_str(
        "/// True when `version` of this API is flexible.\npub fn is_flexible(self, version: i16) -> bool {\nself.flexible_min().is_some_and(|f| version >= f)\n}\n\n",
    );
    let controlled_shutdown = apis.iter().any(|a| a.variant == "ControlledShutdown");
    out.push_str("/// The request header version: 2 for flexible versions, else 1 (0 for ControlledShutdown v0).\npub fn request_header_version(self, version: i16) -> i16 {\n");
    if controlled_shutdown {
        out.push_str("if self == ApiKey::ControlledShutdown && version == 0 {\nreturn 0;\n}\n");
    }
    out.push_str("if self.is_flexible(version) { 2 } else { 1 }\n}\n\n");
    out.push_str("/// The response header version: 1 for flexible versions, else 0; ApiVersions always uses 0\n/// so that a client can read the error of a version it does not know.\npub fn response_header_version(self, version: i16) -> i16 {\nif self != ApiKey::ApiVersions && self.is_flexible(version) { 1 } else { 0 }\n}\n}\n\n");

    out.push_str("impl std::fmt::Display for ApiKey {\nfn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\nf.write_str(self.name())\n}\n}\n\n");

    for (enum_name, kind, pick) in [
        (
            "RequestBody",
            "request",
            (|a: &Api| &a.request) as fn(&Api) -> &Spec,
        ),
        ("ResponseBody", "response", |a: &Api| &a.response),
    ] {
        writeln!(out, "/// The body of any {kind}, by API.\n#[derive(Debug, Clone, PartialEq)]\npub enum {enum_name} {{").unwrap();
        for a in apis {
            writeln!(out, "{}({}),", a.variant, pick(a).name).unwrap();
        }
        out.push_str("}\n\n");
        writeln!(out, "impl {enum_name} {{").unwrap();
        writeln!(
            out,
            "/// Decodes the body of a `api_key` {kind} at `version`.\npub fn decode(api_key: ApiKey, version: i16, buf: &mut Bytes) -> Result<Self, DecodeError> {{\nif !api_key.supports(version) {{\nreturn Err(DecodeError::UnsupportedVersion {{ api_key: api_key as i16, version }});\n}}\nOk(match api_key {{\n{}}})\n}}\n",
            apis.iter()
                .map(|a| format!(
                    "ApiKey::{v} => {enum_name}::{v}({}::decode(buf, version)?),\n",
                    pick(a).name,
                    v = a.variant
                ))
                .collect::<String>()
        )
        .unwrap();
        writeln!(
            out,
            "/// Encodes the body at `version`.\npub fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{\nlet api_key = self.api_key();\nif !api_key.supports(version) {{\nreturn Err(EncodeError::UnsupportedVersion {{ api_key: api_key as i16, version }});\n}}\nmatch self {{\n{}}}\n}}\n",
            apis.iter()
                .map(|a| format!("{enum_name}::{}(body) => body.encode(buf, version),\n", a.variant))
                .collect::<String>()
        )
        .unwrap();
        writeln!(
            out,
            "/// The API this body belongs to.\npub fn api_key(&self) -> ApiKey {{\nmatch self {{\n{}}}\n}}\n",
            apis.iter()
                .map(|a| format!("{enum_name}::{v}(_) => ApiKey::{v},\n", v = a.variant))
                .collect::<String>()
        )
        .unwrap();
        writeln!(
            out,
            "/// A random body valid for `version` (tests only).\n#[cfg(any(test, feature = \"testing\"))]\npub fn random(api_key: ApiKey, version: i16, rng: &mut Rng) -> Self {{\nmatch api_key {{\n{}}}\n}}\n}}\n",
            apis.iter()
                .map(|a| format!(
                    "ApiKey::{v} => {enum_name}::{v}({}::random(rng, version, 0)),\n",
                    pick(a).name,
                    v = a.variant
                ))
                .collect::<String>()
        )
        .unwrap();
        writeln!(
            out,
            "impl Encode for {enum_name} {{\nfn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{\n{enum_name}::encode(self, buf, version)\n}}\n}}\n"
        )
        .unwrap();
        for a in apis {
            writeln!(
                out,
                "impl From<{t}> for {enum_name} {{\nfn from(body: {t}) -> Self {{\n{enum_name}::{v}(body)\n}}\n}}\n",
                t = pick(a).name,
                v = a.variant
            )
            .unwrap();
        }
    }
    out
}

/// Reads and parses every `.json` spec in `dir` (headers excluded), sorted by name.
fn read_specs(dir: &Path) -> Result<Vec<Spec>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    let mut specs = Vec::new();
    for path in &paths {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let spec = parse_spec(&src, &path.display().to_string())?;
        // The headers are hand-written in `frame.rs`: their quirks (ClientId is never compact)
        // are easier to state in code than to generate.
        if spec.kind == "header" {
            continue;
        }
        specs.push(spec);
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    extend_specs(&mut specs);
    Ok(specs)
}

/// Versions newer than the specs in `../shared/kafka-message-specs`, described here from
/// their KIPs (the specs are a snapshot from before them):
/// - DescribeCluster v2 (KIP-1073): the request's `IncludeFencedBrokers` and each broker's
///   `IsFenced`, so that operators see fenced brokers.
fn extend_specs(specs: &mut [Spec]) {
    let v2 = Versions {
        lo: 2,
        hi: i16::MAX,
    };
    let flag = |name: &str, about: &str| Field {
        name: name.into(),
        ty: Ty::Bool,
        versions: v2,
        nullable: Versions::NONE,
        tagged: Versions::NONE,
        tag: None,
        flexible: None,
        default: None,
        about: about.into(),
        fields: Vec::new(),
    };
    for spec in specs.iter_mut() {
        let target = match spec.name.as_str() {
            "DescribeClusterRequest" if spec.valid.hi == 1 => (
                spec.name.clone(),
                flag(
                    "IncludeFencedBrokers",
                    "Whether to include fenced brokers (KIP-1073).",
                ),
            ),
            "DescribeClusterResponse" if spec.valid.hi == 1 => (
                "DescribeClusterBroker".to_string(),
                flag("IsFenced", "Whether the broker is fenced (KIP-1073)."),
            ),
            _ => continue,
        };
        spec.valid.hi = 2;
        let (struct_name, field) = target;
        if let Some(st) = spec.structs.iter_mut().find(|st| st.name == struct_name) {
            st.fields.push(field);
        } else if let Some(f) = find_nested(&mut spec.structs[0].fields, &struct_name) {
            f.fields.push(field);
        }
    }
}

/// The array-of-struct field whose element type is `name`, searched depth first.
fn find_nested<'a>(fields: &'a mut [Field], name: &str) -> Option<&'a mut Field> {
    for f in fields.iter_mut() {
        let is_it = matches!(&f.ty, Ty::Array(inner) if matches!(inner.as_ref(), Ty::Struct(n) if n == name));
        if is_it {
            return Some(f);
        }
        if let Some(found) = find_nested(&mut f.fields, name) {
            return Some(found);
        }
    }
    None
}

/// Generates every file from the specs in `specs_dir`, formatted with rustfmt.
pub fn generate(specs_dir: &Path) -> Result<GeneratedFiles, String> {
    let specs = read_specs(specs_dir)?;

    let mut requests: BTreeMap<i16, &Spec> = BTreeMap::new();
    let mut responses: BTreeMap<i16, &Spec> = BTreeMap::new();
    for s in &specs {
        let Some(k) = s.api_key else {
            continue;
        };
        let map = match s.kind.as_str() {
            "request" => &mut requests,
            "response" => &mut responses,
            _ => continue,
        };
        if map.insert(k, s).is_some() {
            return Err(format!("api key {k} has two {}s", s.kind));
        }
    }
    let mut apis = Vec::new();
    for (key, req) in &requests {
        let resp = responses
            .get(key)
            .ok_or_else(|| format!("{} has no response", req.name))?;
        let variant = req
            .name
            .strip_suffix("Request")
            .ok_or_else(|| format!("{}: request name must end in Request", req.name))?
            .to_string();
        apis.push(Api {
            variant,
            key: *key,
            request: (*req).clone(),
            response: (*resp).clone(),
        });
    }

    let mut files = GeneratedFiles::new();
    for s in &specs {
        let code = Gen { spec: s }.gen_file()?;
        files.insert(format!("{}.rs", snake_case(&s.name)), rustfmt(&code)?);
    }
    files.insert("mod.rs".to_string(), rustfmt(&gen_mod(&specs, &apis))?);
    Ok(files)
}

/// A KRaft metadata record type: `PartitionChange` for `PartitionChangeRecord`.
struct RecordType<'a> {
    variant: String,
    key: i16,
    spec: &'a Spec,
}

/// Generates the KRaft metadata records from the specs in `specs_dir` (every spec must be
/// `"type": "metadata"` with a unique `apiKey` and a name ending in `Record`), formatted with
/// rustfmt: one module per record plus `mod.rs`.
pub fn generate_metadata_records(specs_dir: &Path) -> Result<GeneratedFiles, String> {
    let specs = read_specs(specs_dir)?;
    let mut by_key: BTreeMap<i16, RecordType> = BTreeMap::new();
    for s in &specs {
        if s.kind != "metadata" {
            return Err(format!(
                "{}: type {:?}, expected \"metadata\"",
                s.name, s.kind
            ));
        }
        let key = s
            .api_key
            .ok_or_else(|| format!("{}: a metadata record needs an apiKey", s.name))?;
        if key < 0 {
            return Err(format!("{}: negative apiKey {key}", s.name));
        }
        if s.valid.is_empty() || s.valid.lo < 0 || s.valid.hi == i16::MAX {
            return Err(format!("{}: validVersions must be a closed range", s.name));
        }
        let variant = s
            .name
            .strip_suffix("Record")
            .ok_or_else(|| format!("{}: record name must end in Record", s.name))?
            .to_string();
        if let Some(other) = by_key.insert(
            key,
            RecordType {
                variant,
                key,
                spec: s,
            },
        ) {
            return Err(format!(
                "apiKey {key} is used by both {} and {}",
                other.spec.name, s.name
            ));
        }
    }
    let records: Vec<RecordType> = by_key.into_values().collect();
    let mut files = GeneratedFiles::new();
    for s in &specs {
        let code = Gen { spec: s }.gen_file()?;
        files.insert(format!("{}.rs", snake_case(&s.name)), rustfmt(&code)?);
    }
    files.insert(
        "mod.rs".to_string(),
        rustfmt(&gen_records_mod(&specs, &records))?,
    );
    Ok(files)
}

fn gen_records_mod(specs: &[Spec], records: &[RecordType]) -> String {
    let mut out = String::new();
    out.push_str(
        "//! Every KRaft metadata record, one module per spec file, plus `MetadataRecordType` and\n//! the `MetadataRecord` enum with its framed encoding: the record type (api key) as an\n//! unsigned varint, the version as an unsigned varint, then the body. Encoding uses each\n//! record's highest version; decoding accepts any valid version; an unknown type or version is\n//! an error value.\n//!\n//! Generated by `cargo xtask codegen`; do not edit.\n\n",
    );
    out.push_str("#![allow(\n    unused_variables,\n    unused_mut,\n    clippy::field_reassign_with_default,\n    clippy::large_enum_variant\n)]\n\n");
    out.push_str("use bytes::{Bytes, BytesMut};\n\n");
    out.push_str("use crate::codec::{self as c, Decode, DecodeError, Encode, EncodeError};\n");
    out.push_str("#[cfg(any(test, feature = \"testing\"))]\n");
    out.push_str("use crate::testing::{Random, Rng};\n\n");
    for s in specs {
        writeln!(out, "pub mod {};", snake_case(&s.name)).unwrap();
    }
    out.push('\n');
    for s in specs {
        writeln!(out, "pub use {}::{};", snake_case(&s.name), s.name).unwrap();
    }
    out.push('\n');

    let arms = |f: &dyn Fn(&RecordType) -> String| -> String {
        records
            .iter()
            .map(|r| format!("MetadataRecordType::{} => {},\n", r.variant, f(r)))
            .collect()
    };
    out.push_str("/// A metadata record type, by its api key.\n");
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n#[repr(i16)]\npub enum MetadataRecordType {\n");
    for r in records {
        writeln!(out, "{} = {},", r.variant, r.key).unwrap();
    }
    out.push_str("}\n\n");
    out.push_str("impl MetadataRecordType {\n");
    writeln!(
        out,
        "/// The record type with this api key, if Skein knows it.\npub fn from_i16(key: i16) -> Option<MetadataRecordType> {{\nmatch key {{\n{}_ => None,\n}}\n}}\n",
        records
            .iter()
            .map(|r| format!("{} => Some(MetadataRecordType::{}),\n", r.key, r.variant))
            .collect::<String>()
    )
    .unwrap();
    writeln!(
        out,
        "/// The record's name, as in the specs without the `Record` suffix.\npub fn name(self) -> &'static str {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|r| format!("{:?}", r.variant))
    )
    .unwrap();
    writeln!(
        out,
        "/// The versions the codec supports, inclusive.\npub fn valid_versions(self) -> (i16, i16) {{\nmatch self {{\n{}}}\n}}\n",
        arms(&|r| format!("({}, {})", r.spec.valid.lo, r.spec.valid.hi))
    )
    .unwrap();
    writeln!(
        out,
        "/// Every record type, in key order.\npub fn all() -> &'static [MetadataRecordType] {{\n&[{}]\n}}\n",
        records
            .iter()
            .map(|r| format!("MetadataRecordType::{}", r.variant))
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    out.push_str(
        "/// The highest version, the one records are encoded at.\npub fn latest_version(self) -> i16 {\nself.valid_versions().1\n}\n\n",
    );
    out.push_str(
        "/// True when `version` is within `valid_versions`.\npub fn supports(self, version: i16) -> bool {\nlet (lo, hi) = self.valid_versions();\n(lo..=hi).contains(&version)\n}\n}\n\n",
    );
    out.push_str("impl std::fmt::Display for MetadataRecordType {\nfn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\nf.write_str(self.name())\n}\n}\n\n");

    out.push_str("/// Any metadata record, by type.\n#[derive(Debug, Clone, PartialEq)]\npub enum MetadataRecord {\n");
    for r in records {
        writeln!(out, "{}({}),", r.variant, r.spec.name).unwrap();
    }
    out.push_str("}\n\n");
    out.push_str("impl MetadataRecord {\n");
    writeln!(
        out,
        "/// The type of this record.\npub fn record_type(&self) -> MetadataRecordType {{\nmatch self {{\n{}}}\n}}\n",
        records
            .iter()
            .map(|r| format!("MetadataRecord::{v}(_) => MetadataRecordType::{v},\n", v = r.variant))
            .collect::<String>()
    )
    .unwrap();
    writeln!(
        out,
        "/// Decodes the body of a `record_type` record at `version`.\npub fn decode_body(record_type: MetadataRecordType, version: i16, buf: &mut Bytes) -> Result<Self, DecodeError> {{\nif !record_type.supports(version) {{\nreturn Err(DecodeError::UnsupportedVersion {{ api_key: record_type as i16, version }});\n}}\nOk(match record_type {{\n{}}})\n}}\n",
        records
            .iter()
            .map(|r| format!(
                "MetadataRecordType::{v} => MetadataRecord::{v}({}::decode(buf, version)?),\n",
                r.spec.name,
                v = r.variant
            ))
            .collect::<String>()
    )
    .unwrap();
    writeln!(
        out,
        "/// Encodes the body at `version`.\npub fn encode_body(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError> {{\nlet record_type = self.record_type();\nif !record_type.supports(version) {{\nreturn Err(EncodeError::UnsupportedVersion {{ api_key: record_type as i16, version }});\n}}\nmatch self {{\n{}}}\n}}\n",
        records
            .iter()
            .map(|r| format!("MetadataRecord::{}(body) => body.encode(buf, version),\n", r.variant))
            .collect::<String>()
    )
    .unwrap();
    out.push_str(
        "/// Encodes the framed record at its type's highest version: unsigned varint type,\n/// unsigned varint version, body.\npub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {\nlet record_type = self.record_type();\nlet version = record_type.latest_version();\nc::put_uvarint(buf, record_type as i16 as u32);\nc::put_uvarint(buf, version as u32);\nself.encode_body(buf, version)\n}\n\n",
    );
    out.push_str(
        "/// Decodes one framed record from the front of `buf` (any valid version), advancing it.\npub fn decode(buf: &mut Bytes) -> Result<Self, DecodeError> {\nlet key = c::get_uvarint(buf)?;\nlet key = i16::try_from(key).map_err(|_| DecodeError::InvalidLength { what: \"metadata record type\", len: i64::from(key) })?;\nlet record_type = MetadataRecordType::from_i16(key).ok_or(DecodeError::UnknownApiKey(key))?;\nlet version = c::get_uvarint(buf)?;\nlet version = i16::try_from(version).map_err(|_| DecodeError::InvalidLength { what: \"metadata record version\", len: i64::from(version) })?;\nSelf::decode_body(record_type, version, buf)\n}\n\n",
    );
    writeln!(
        out,
        "/// A random record valid for `version` (tests only).\n#[cfg(any(test, feature = \"testing\"))]\npub fn random(record_type: MetadataRecordType, version: i16, rng: &mut Rng) -> Self {{\nmatch record_type {{\n{}}}\n}}\n}}\n",
        records
            .iter()
            .map(|r| format!(
                "MetadataRecordType::{v} => MetadataRecord::{v}({}::random(rng, version, 0)),\n",
                r.spec.name,
                v = r.variant
            ))
            .collect::<String>()
    )
    .unwrap();
    for r in records {
        writeln!(
            out,
            "impl From<{t}> for MetadataRecord {{\nfn from(body: {t}) -> Self {{\nMetadataRecord::{v}(body)\n}}\n}}\n",
            t = r.spec.name,
            v = r.variant
        )
        .unwrap();
    }
    out
}

/// Formats Rust source with `rustfmt --edition 2021`, with the workspace's configuration.
pub fn rustfmt(code: &str) -> Result<String, String> {
    let mut child = Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout", "--quiet"])
        .current_dir(workspace_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = code.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| format!("running rustfmt: {e}"))?;
    writer
        .join()
        .expect("rustfmt writer thread")
        .map_err(|e| format!("writing to rustfmt: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "rustfmt failed: {}\n--- input ---\n{}",
            String::from_utf8_lossy(&output.stderr),
            code.lines().take(200).collect::<Vec<_>>().join("\n")
        ));
    }
    String::from_utf8(output.stdout).map_err(|e| format!("rustfmt output: {e}"))
}

/// Replaces the `.rs` files in `out_dir` with `files`.
pub fn write_files(out_dir: &Path, files: &GeneratedFiles) -> Result<(), String> {
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    for entry in std::fs::read_dir(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.extension().is_some_and(|x| x == "rs") {
            std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    for (name, code) in files {
        let path = out_dir.join(name);
        std::fs::write(&path, code).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_but_not_urls() {
        let src = "{ // comment\n \"about\": \"see https://x.org/a // b\", \"q\": \"a\\\"//\" }";
        let v: Value = serde_json::from_str(&strip_comments(src)).unwrap();
        assert_eq!(v["about"], "see https://x.org/a // b");
        assert_eq!(v["q"], "a\"//");
    }

    #[test]
    fn snake_cases_spec_names() {
        assert_eq!(snake_case("ProduceRequest"), "produce_request");
        assert_eq!(snake_case("V3AndBelowTopics"), "v3_and_below_topics");
        assert_eq!(snake_case("ErrorCode"), "error_code");
        assert_eq!(snake_case("ZkMigrationReady"), "zk_migration_ready");
        assert_eq!(field_ident("Type"), "r#type");
    }

    #[test]
    fn parses_versions() {
        assert_eq!(
            Versions::parse("3+").unwrap(),
            Versions {
                lo: 3,
                hi: i16::MAX
            }
        );
        assert_eq!(Versions::parse("0-2").unwrap(), Versions { lo: 0, hi: 2 });
        assert_eq!(Versions::parse("1").unwrap(), Versions { lo: 1, hi: 1 });
        assert!(Versions::parse("none").unwrap().is_empty());
    }
}
