//! How results are shown: aligned text tables or JSON, record payloads as JSON values, and a
//! progress line on stderr when stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The `--output` choice.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// Lays out rows under a header, each column as wide as its widest cell, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// A payload as JSON: a string when it is UTF-8, `{"base64": …}` when it is not, null when
/// absent.
pub fn bytes_json(bytes: Option<&[u8]>) -> Value {
    match bytes {
        None => Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => Value::String(s.to_owned()),
            Err(_) => json!({ "base64": base64(b) }),
        },
    }
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Some(n)` as the number, `None` as `-`.
pub fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A duration for people: `850ms`, `12.3s`, `4m05s`, `2h03m`, `3d04h`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    let s = ms / 1000;
    match ms {
        _ if ms < 1000 => format!("{ms}ms"),
        _ if ms < 60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        _ if ms < 3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        _ if ms < 86_400_000 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A progress line on stderr (`consumed 120/1000 records`), drawn only when stderr is a
/// terminal and at most ten times a second.
pub struct Progress {
    enabled: bool,
    verb: &'static str,
    total: u64,
    last_draw: Option<Instant>,
}

impl Progress {
    pub fn new(verb: &'static str, total: Option<u64>) -> Progress {
        Progress {
            enabled: total.is_some() && std::io::stderr().is_terminal(),
            verb,
            total: total.unwrap_or(0),
            last_draw: None,
        }
    }

    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        if self
            .last_draw
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100))
            && done < self.total
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{} {done}/{} records", self.verb, self.total);
        let _ = err.flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["TOPIC", "PARTITIONS"],
            &[
                vec!["orders".into(), "3".into()],
                vec!["a".into(), "12".into()],
            ],
        );
        assert_eq!(t, "TOPIC   PARTITIONS\norders  3\na       12\n");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(&[0xff, 0xfe]), "//4=");
        assert_eq!(bytes_json(Some(&[0xff])), json!({"base64": "/w=="}));
        assert_eq!(bytes_json(Some(b"hi")), json!("hi"));
        assert_eq!(bytes_json(None), Value::Null);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_duration(850), "850ms");
        assert_eq!(human_duration(12_345), "12.3s");
        assert_eq!(human_duration(245_000), "4m05s");
        assert_eq!(human_duration(7_380_000), "2h03m");
        assert_eq!(human_duration(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }
}
