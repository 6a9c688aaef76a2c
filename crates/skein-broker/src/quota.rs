//! Client quotas as Kafka's `ClientQuotaManager` enforces them (KIP-13, KIP-55, KIP-124,
//! KIP-219).
//!
//! Quotas live in the cluster metadata (`ClientQuotaRecord`, see `api/client_quotas.rs`).
//! For a request from user principal `U` with client id `C`, each quota type (produce bytes,
//! fetch bytes, request time) takes the first entity that sets its key, in Kafka's order:
//! `(user=U, client-id=C)`, `(user=U, client-id=default)`, `(user=U)`,
//! `(user=default, client-id=C)`, `(user=default, client-id=default)`, `(user=default)`,
//! `(client-id=C)`, `(client-id=default)`. The matched entity also says who shares the rate:
//! a user quota is shared by all of that user's client ids, a default applies to each user
//! (or client id) on its own, as in Kafka.
//!
//! Rates are measured as Kafka's `Rate` over `quota.window.num` samples of
//! `quota.window.size.seconds`. A client past its quota gets
//! `throttle = (rate - quota) / quota * window` ms in the response's `throttle_time_ms`, and
//! its connection is muted for that long: the response goes out at once, and no further
//! request is read from the connection until the time is over (KIP-219). Sensors of clients
//! idle for longer than the whole window are dropped (they hold no rate any more), and their
//! number is bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use skein_metadata::image::{QuotaEntity, QuotaValue};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const CONTROLLER_MUTATION_RATE: &str = "controller_mutation_rate";
pub const CONNECTION_CREATION_RATE: &str = "connection_creation_rate";

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// The most client sensors kept; past it the least recently used one is dropped.
const MAX_SENSORS: usize = 10_000;
/// The most distinct (quota, user, client id) label sets the throttle metrics carry; later
/// ones are counted under `user="other", client_id="other"`.
pub const MAX_METRIC_CLIENTS: usize = 200;

/// The three quotas a client is measured against, and the connection creation rate of an
/// IP address (KIP-612, not in [`QuotaType::ALL`]: it is checked when a connection is
/// accepted, not per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QuotaType {
    Produce,
    Fetch,
    Request,
    Connection,
}

impl QuotaType {
    pub const ALL: [QuotaType; 3] = [QuotaType::Produce, QuotaType::Fetch, QuotaType::Request];

    /// The quota's key in the metadata.
    pub fn key(self) -> &'static str {
        match self {
            QuotaType::Produce => PRODUCER_BYTE_RATE,
            QuotaType::Fetch => CONSUMER_BYTE_RATE,
            QuotaType::Request => REQUEST_PERCENTAGE,
            QuotaType::Connection => CONNECTION_CREATION_RATE,
        }
    }

    /// Its name in metrics (Kafka's sensor names: Produce, Fetch, Request).
    pub fn label(self) -> &'static str {
        match self {
            QuotaType::Produce => "produce",
            QuotaType::Fetch => "fetch",
            QuotaType::Request => "request",
            QuotaType::Connection => "connection_creation",
        }
    }
}

/// The quota that applies to (`user`, `client_id`) for `key`, and who shares its rate:
/// `((user tag, client-id tag), quota)`, a tag empty when the entity does not name it.
pub fn resolve(
    quotas: &BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<((String, String), f64)> {
    let u = Some(user.to_string());
    let c = Some(client_id.to_string());
    let uc = |user: Option<String>, client: Option<String>| -> QuotaEntity {
        vec![(CLIENT_ID.to_string(), client), (USER.to_string(), user)]
    };
    let one = |ty: &str, name: Option<String>| -> QuotaEntity { vec![(ty.to_string(), name)] };
    let (user_tag, client_tag) = (user.to_string(), client_id.to_string());
    let order: [(QuotaEntity, (String, String)); 8] = [
        (
            uc(u.clone(), c.clone()),
            (user_tag.clone(), client_tag.clone()),
        ),
        (uc(u.clone(), None), (user_tag.clone(), client_tag.clone())),
        (one(USER, u), (user_tag.clone(), String::new())),
        (uc(None, c.clone()), (user_tag.clone(), client_tag.clone())),
        (uc(None, None), (user_tag.clone(), client_tag.clone())),
        (one(USER, None), (user_tag, String::new())),
        (one(CLIENT_ID, c), (String::new(), client_tag.clone())),
        (one(CLIENT_ID, None), (String::new(), client_tag)),
    ];
    order.into_iter().find_map(|(entity, tags)| {
        let v = quotas.get(&entity)?.get(key)?;
        Some((tags, v.0))
    })
}

/// The `connection_creation_rate` (connections per second) that applies to connections from
/// `ip`: its own entity's, else the default IP entity's, as Kafka takes it (KIP-612). An
/// entity's name is compared as an address, so `::1` and `0:0:0:0:0:0:0:1` are one.
pub fn resolve_ip(
    quotas: &BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>>,
    ip: std::net::IpAddr,
) -> Option<f64> {
    let mut default = None;
    for (entity, values) in quotas {
        let [(ty, name)] = entity.as_slice() else {
            continue;
        };
        if ty != IP {
            continue;
        }
        let Some(v) = values.get(CONNECTION_CREATION_RATE) else {
            continue;
        };
        match name {
            None => default = Some(v.0),
            Some(n) if n.parse::<std::net::IpAddr>().ok() == Some(ip) => return Some(v.0),
            Some(_) => {}
        }
    }
    default
}

/// Kafka's `Rate` over a `SampledStat`: `samples` windows of `window_ms` each.
#[derive(Debug, Clone)]
struct Rate {
    /// (start of the window in ms, value), `None` when unused.
    samples: Vec<Option<(u64, f64)>>,
    current: usize,
}

impl Rate {
    fn new(samples: usize) -> Rate {
        Rate {
            samples: vec![None; samples.max(2)],
            current: 0,
        }
    }

    fn record(&mut self, value: f64, now: u64, window_ms: u64) {
        let n = self.samples.len();
        match self.samples[self.current] {
            None => self.samples[self.current] = Some((now, 0.0)),
            Some((start, _)) if now.saturating_sub(start) >= window_ms => {
                self.current = (self.current + 1) % n;
                self.samples[self.current] = Some((now, 0.0));
            }
            Some(_) => {}
        }
        if let Some((_, v)) = self.samples[self.current].as_mut() {
            *v += value;
        }
    }

    /// Undoes a `record` of `value` (Kafka's `unrecordQuotaSensor`).
    fn unrecord(&mut self, value: f64) {
        if let Some((_, v)) = self.samples[self.current].as_mut() {
            *v -= value;
        }
    }

    /// The rate per second, and the window it was measured over (ms).
    fn measure(&mut self, now: u64, window_ms: u64) -> (f64, u64) {
        let n = self.samples.len() as u64;
        // Samples older than the whole window are obsolete.
        for s in self.samples.iter_mut() {
            if matches!(s, Some((start, _)) if now.saturating_sub(*start) >= n * window_ms) {
                *s = None;
            }
        }
        let total: f64 = self.samples.iter().flatten().map(|(_, v)| v).sum();
        let oldest = self
            .samples
            .iter()
            .flatten()
            .map(|(start, _)| *start)
            .min()
            .unwrap_or(now);
        let mut elapsed = now.saturating_sub(oldest);
        // As Kafka: at least samples-1 full windows, so a new client is not throttled for a
        // burst in its first second.
        let full = elapsed / window_ms;
        if full < n - 1 {
            elapsed += (n - 1 - full) * window_ms;
        }
        (total / (elapsed as f64 / 1000.0), elapsed)
    }

    fn last_use(&self) -> u64 {
        self.samples
            .iter()
            .flatten()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0)
    }
}

/// One client's sensor for one quota type.
struct Sensor {
    rate: Rate,
    last_used: u64,
}

/// The broker's client quota manager: the sensors of the clients that have a quota.
pub struct ClientQuotas {
    window_ms: u64,
    samples: usize,
    start: Instant,
    sensors: Mutex<HashMap<(QuotaType, String, String), Sensor>>,
    /// The (quota, user, client id) label sets the throttle metrics have used.
    labels: Mutex<std::collections::BTreeSet<(QuotaType, String, String)>>,
}

impl ClientQuotas {
    /// `samples` windows of `window` (`quota.window.num`, `quota.window.size.seconds`).
    pub fn new(samples: usize, window: Duration) -> ClientQuotas {
        ClientQuotas {
            window_ms: (window.as_millis() as u64).max(1),
            samples: samples.max(2),
            start: Instant::now(),
            sensors: Mutex::new(HashMap::new()),
            labels: Mutex::new(Default::default()),
        }
    }

    /// One sample window, in ms (`quota.window.size.seconds`).
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The most a client with `quota` (bytes/s) may take in one quota window span, as
    /// Kafka bounds a fetch's size (`getMaxValueInQuotaWindow`).
    pub fn max_value_in_window(&self, quota: f64) -> f64 {
        quota * (self.samples as f64 - 1.0) * self.window_ms as f64 / 1000.0
    }

    /// Records `value` against `tags`' sensor for `qt` and returns the throttle time in ms
    /// (0 when the rate is within `quota`).
    pub fn record(&self, qt: QuotaType, tags: &(String, String), quota: f64, value: f64) -> u64 {
        let now = self.now_ms();
        let mut sensors = self.sensors.lock().unwrap_or_else(|e| e.into_inner());
        let key = (qt, tags.0.clone(), tags.1.clone());
        if !sensors.contains_key(&key) {
            self.make_room(&mut sensors, now);
        }
        let sensor = sensors.entry(key).or_insert_with(|| Sensor {
            rate: Rate::new(self.samples),
            last_used: now,
        });
        sensor.last_used = now;
        sensor.rate.record(value, now, self.window_ms);
        let (rate, window) = sensor.rate.measure(now, self.window_ms);
        drop(sensors);
        if quota <= 0.0 {
            // A zero quota: Kafka throttles by the whole window.
            return if value > 0.0 { window } else { 0 };
        }
        if rate <= quota {
            return 0;
        }
        let ms = ((rate - quota) / quota * window as f64).round();
        ms.clamp(0.0, i32::MAX as f64) as u64
    }

    /// Takes back a `record` (a throttled fetch answered without its records).
    pub fn unrecord(&self, qt: QuotaType, tags: &(String, String), value: f64) {
        let mut sensors = self.sensors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = sensors.get_mut(&(qt, tags.0.clone(), tags.1.clone())) {
            s.rate.unrecord(value);
        }
    }

    /// Drops idle sensors (no sample left in the window) and, if still full, the least
    /// recently used one.
    fn make_room(&self, sensors: &mut HashMap<(QuotaType, String, String), Sensor>, now: u64) {
        if sensors.len() < MAX_SENSORS {
            return;
        }
        let span = self.window_ms * self.samples as u64;
        sensors.retain(|_, s| now.saturating_sub(s.last_used.max(s.rate.last_use())) < span);
        if sensors.len() >= MAX_SENSORS {
            if let Some(k) = sensors
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sensors.remove(&k);
            }
        }
    }

    /// Drops the sensors idle for the whole window (called now and then).
    pub fn expire(&self) {
        let now = self.now_ms();
        let span = self.window_ms * self.samples as u64;
        let mut sensors = self.sensors.lock().unwrap_or_else(|e| e.into_inner());
        sensors.retain(|_, s| now.saturating_sub(s.last_used) < span);
    }

    /// The number of sensors held.
    pub fn sensors(&self) -> usize {
        self.sensors.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The (user, client id) labels to count a throttle of `tags` under in `/metrics`:
    /// its own for the first [`MAX_METRIC_CLIENTS`] label sets, `other` after.
    pub fn metric_labels<'a>(
        &self,
        qt: QuotaType,
        tags: &'a (String, String),
    ) -> (&'a str, &'a str) {
        let mut labels = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        let key = (qt, tags.0.clone(), tags.1.clone());
        if labels.contains(&key) {
            return (&tags.0, &tags.1);
        }
        if labels.len() < MAX_METRIC_CLIENTS {
            labels.insert(key);
            return (&tags.0, &tags.1);
        }
        ("other", "other")
    }
}

/// A connection's mute (KIP-219): set when a response is throttled; the server reads no
/// further request from the connection until it is over.
#[derive(Debug, Default)]
pub struct ChannelMute {
    until: Mutex<Option<Instant>>,
}

impl ChannelMute {
    /// Mutes the connection for `ms` from now (a longer mute already set stays).
    pub fn mute_for(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        let end = Instant::now() + Duration::from_millis(ms);
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        if until.is_none_or(|u| u < end) {
            *until = Some(end);
        }
    }

    /// When the mute ends, if it is still on.
    pub fn until(&self) -> Option<Instant> {
        let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
        match *until {
            Some(u) if u > Instant::now() => Some(u),
            _ => {
                *until = None;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (entity, key, value).
    type Spec<'a> = (&'a [(&'a str, Option<&'a str>)], &'a str, f64);

    fn q(entries: &[Spec<'_>]) -> BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> {
        let mut m: BTreeMap<QuotaEntity, BTreeMap<String, QuotaValue>> = BTreeMap::new();
        for (entity, key, v) in entries {
            let e = skein_metadata::image::quota_entity(
                entity
                    .iter()
                    .map(|(t, n)| (t.to_string(), n.map(str::to_string))),
            )
            .unwrap();
            m.entry(e)
                .or_default()
                .insert(key.to_string(), QuotaValue(*v));
        }
        m
    }

    #[test]
    fn precedence_is_kafkas() {
        let k = PRODUCER_BYTE_RATE;
        let all = q(&[
            (&[(USER, Some("alice")), (CLIENT_ID, Some("app"))], k, 1.0),
            (&[(USER, Some("alice")), (CLIENT_ID, None)], k, 2.0),
            (&[(USER, Some("alice"))], k, 3.0),
            (&[(USER, None), (CLIENT_ID, Some("app"))], k, 4.0),
            (&[(USER, None), (CLIENT_ID, None)], k, 5.0),
            (&[(USER, None)], k, 6.0),
            (&[(CLIENT_ID, Some("app"))], k, 7.0),
            (&[(CLIENT_ID, None)], k, 8.0),
        ]);
        let r = |u: &str, c: &str| resolve(&all, u, c, k).map(|(_, v)| v);
        assert_eq!(r("alice", "app"), Some(1.0));
        assert_eq!(r("alice", "other"), Some(2.0));
        assert_eq!(r("bob", "app"), Some(4.0));
        assert_eq!(r("bob", "x"), Some(5.0));
        let only_clients = q(&[
            (&[(CLIENT_ID, Some("app"))], k, 7.0),
            (&[(CLIENT_ID, None)], k, 8.0),
        ]);
        assert_eq!(
            resolve(&only_clients, "bob", "app", k),
            Some(((String::new(), "app".into()), 7.0))
        );
        assert_eq!(
            resolve(&only_clients, "bob", "app", CONSUMER_BYTE_RATE),
            None
        );
        let user = q(&[(&[(USER, Some("alice"))], k, 3.0)]);
        // A user quota is shared by all the user's client ids.
        assert_eq!(
            resolve(&user, "alice", "app", k),
            Some((("alice".into(), String::new()), 3.0))
        );
    }

    #[test]
    fn an_ips_own_rate_comes_before_the_default() {
        let k = CONNECTION_CREATION_RATE;
        let all = q(&[
            (&[(IP, Some("10.0.0.1"))], k, 5.0),
            (&[(IP, Some("0:0:0:0:0:0:0:1"))], k, 7.0),
            (&[(IP, None)], k, 2.0),
            (&[(USER, None)], PRODUCER_BYTE_RATE, 9.0),
        ]);
        let r = |ip: &str| resolve_ip(&all, ip.parse().unwrap());
        assert_eq!(r("10.0.0.1"), Some(5.0));
        assert_eq!(r("::1"), Some(7.0), "names compare as addresses");
        assert_eq!(r("10.0.0.2"), Some(2.0));
        let none = q(&[(&[(IP, Some("10.0.0.1"))], k, 5.0)]);
        assert_eq!(resolve_ip(&none, "10.0.0.2".parse().unwrap()), None);
    }

    #[test]
    fn throttle_is_the_excess_over_the_window() {
        let quotas = ClientQuotas::new(11, Duration::from_secs(1));
        let tags = ("u".to_string(), "c".to_string());
        // 10 windows of 1 s at least: 20 000 bytes at once is 2000 B/s against 1000.
        let t = quotas.record(QuotaType::Produce, &tags, 1000.0, 20_000.0);
        assert!((9_900..=10_100).contains(&t), "{t}");
        let t = quotas.record(
            QuotaType::Produce,
            &("v".into(), "c".into()),
            1000.0,
            5_000.0,
        );
        assert_eq!(t, 0);
    }

    #[test]
    fn mute_keeps_the_longest() {
        let m = ChannelMute::default();
        assert!(m.until().is_none());
        m.mute_for(10_000);
        let a = m.until().unwrap();
        m.mute_for(1);
        assert_eq!(m.until(), Some(a));
    }
}
