//! A tiny parser of the classic consumer protocol's subscription metadata.
//!
//! `ConsumerProtocolSubscription` (all versions start the same): `version: i16`, then
//! `topics: [string]` as an `i32` count of `i16`-length strings, then fields this crate
//! does not need (user data, owned partitions, generation, rack). The coordinator only
//! reads the topic names, to refuse OffsetDelete of subscribed topics and to expire offsets
//! of topics a stable group no longer subscribes to, as Kafka does.

/// The subscribed topic names, or `None` when the bytes are not a subscription.
pub fn parse_subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let end = pos.checked_add(n)?;
        let s = metadata.get(pos..end)?;
        pos = end;
        Some(s)
    };
    let version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    if version < 0 {
        return None;
    }
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    if count < 0 {
        return None;
    }
    let count = count as usize;
    // Each topic takes at least its 2-byte length.
    if count > metadata.len() / 2 {
        return None;
    }
    let mut topics = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        if len < 0 {
            return None;
        }
        let raw = take(len as usize)?;
        topics.push(std::str::from_utf8(raw).ok()?.to_owned());
    }
    Some(topics)
}

/// Encodes a version-0 subscription (topics and user data); used by tests and tools.
pub fn encode_subscription(topics: &[&str], user_data: &[u8]) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(&0i16.to_be_bytes());
    w.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for t in topics {
        w.extend_from_slice(&(t.len() as i16).to_be_bytes());
        w.extend_from_slice(t.as_bytes());
    }
    w.extend_from_slice(&(user_data.len() as i32).to_be_bytes());
    w.extend_from_slice(user_data);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = encode_subscription(&["a", "bb"], b"x");
        assert_eq!(
            parse_subscribed_topics(&b),
            Some(vec!["a".to_string(), "bb".to_string()])
        );
    }

    #[test]
    fn garbage() {
        assert_eq!(parse_subscribed_topics(&[]), None);
        assert_eq!(
            parse_subscribed_topics(&[0, 0, 0x7f, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(
            parse_subscribed_topics(&[0, 0, 0, 0, 0, 1, 0, 5, b'a']),
            None
        );
    }
}
