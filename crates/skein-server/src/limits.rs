//! Connection limits, as Kafka's `ConnectionQuotas` has them.
//!
//! - `max.connections.per.ip` (and `max.connections.per.ip.overrides`, `host:count,…` with
//!   host names or addresses): a connection past its address's limit is closed at once, on
//!   every listener alike.
//! - `max.connection.creation.rate`, broker-wide, and `listener.name.<name>.
//!   max.connection.creation.rate`: connections past the rate are not refused but delayed:
//!   the listener stops accepting until the rate allows the next one (they wait in the
//!   kernel's backlog). As in Kafka, the inter-broker listener only obeys its own rate.
//! - `max.connections`, broker-wide, and `listener.name.<name>.max.connections`: past them
//!   a new connection is closed at once.
//!
//! Every accepted connection holds a [`ConnectionSlot`]: it counts the connection for its
//! address, its listener and the broker, and gives it all back when dropped, whatever ended
//! the connection (a failed handshake, a failed login, a panic in its task).
//! Refusals are logged at most once per [`LOG_EVERY`] per reason, with a count of those not
//! logged.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use skein_broker::BrokerConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How often a refusal of one kind is logged at most.
pub const LOG_EVERY: Duration = RareLog::EVERY;

/// Kafka's "no limit": `Integer.MAX_VALUE`.
const UNLIMITED: i64 = i32::MAX as i64;

/// Parses `max.connections.per.ip.overrides`: `host:count,…` (a host name, an IPv4 address,
/// or an IPv6 address: the count is after the last `:`).
pub fn parse_overrides(v: &str) -> Result<Vec<(String, usize)>, String> {
    let mut out = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((host, count)) = entry.rsplit_once(':') else {
            return Err(format!("'{entry}' is not of the form HOST:COUNT"));
        };
        let host = host.trim().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("'{entry}' has an empty host"));
        }
        let count: i64 = count
            .trim()
            .parse()
            .map_err(|_| format!("'{entry}': '{}' is not a whole number", count.trim()))?;
        if !(0..=UNLIMITED).contains(&count) {
            return Err(format!(
                "'{entry}': {count} is not between 0 and {UNLIMITED}"
            ));
        }
        out.push((host.to_string(), count as usize));
    }
    Ok(out)
}

/// Resolves an override's host: an address as is, a host name to its addresses.
fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let addrs: Vec<IpAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|e| {
            format!("max.connections.per.ip.overrides: host {host} does not resolve: {e}")
        })?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() {
        return Err(format!(
            "max.connections.per.ip.overrides: host {host} has no address"
        ));
    }
    Ok(addrs)
}

/// A token bucket for a connection creation rate: up to one second's worth at once, then
/// `rate` per second.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: i64) -> Option<Mutex<Bucket>> {
        (rate < UNLIMITED).then(|| {
            Mutex::new(Bucket {
                rate: rate.max(0) as f64,
                tokens: rate.max(0) as f64,
                at: Instant::now(),
            })
        })
    }

    /// Takes a token (possibly on credit) and says how long to wait for it.
    fn take(&mut self, now: Instant) -> Duration {
        if self.rate <= 0.0 {
            // A rate of 0: nothing is accepted; wait in long steps.
            return Duration::from_secs(1);
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate.max(1.0));
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

pub use skein_raft::RareLog;

/// The broker-wide limits and counts, shared by every listener.
pub struct ConnectionLimits {
    per_ip: usize,
    overrides: HashMap<IpAddr, usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
    broker_rate: Option<Mutex<Bucket>>,
    broker_max: Arc<Semaphore>,
    pub max_connections: usize,
    pub refused_ip_log: RareLog,
    pub refused_max_log: RareLog,
    pub throttled_ip_log: RareLog,
    /// Connections throttled by an IP's `connection_creation_rate` quota, held open until
    /// their throttle time is over (as Kafka closes them); past this many they are closed at
    /// once, so a flood cannot make the broker hold file descriptors without bound.
    pub throttled_held: Arc<Semaphore>,
}

/// The most throttled connections held open at once (see [`ConnectionLimits::throttled_held`]).
pub const MAX_THROTTLED_HELD: usize = 1024;

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max.connections.per.ip` (or its override) for this address: the limit.
    PerIp(usize),
    /// `listener.name.<name>.max.connections`.
    Listener(usize),
    /// `max.connections`.
    Broker(usize),
}

impl Refused {
    /// The setting that refused it, for the metric's label.
    pub fn setting(self) -> &'static str {
        match self {
            Refused::PerIp(_) => "max.connections.per.ip",
            Refused::Listener(_) => "listener.max.connections",
            Refused::Broker(_) => "max.connections",
        }
    }
}

impl ConnectionLimits {
    /// Reads the limits; host names of the overrides are resolved now (an error names the
    /// host that does not resolve).
    pub fn new(config: &BrokerConfig) -> Result<ConnectionLimits, String> {
        let per_ip = config
            .setting_i64("max.connections.per.ip")
            .clamp(0, UNLIMITED) as usize;
        let mut overrides = HashMap::new();
        let text = config
            .explicit
            .get("max.connections.per.ip.overrides")
            .cloned()
            .unwrap_or_default();
        for (host, count) in parse_overrides(&text)? {
            for ip in resolve(&host)? {
                overrides.insert(ip, count);
            }
        }
        if per_ip == 0 && overrides.is_empty() {
            return Err(
                "max.connections.per.ip=0 needs max.connections.per.ip.overrides (else no connection is ever accepted)"
                    .into(),
            );
        }
        Ok(ConnectionLimits {
            per_ip,
            overrides,
            open: Mutex::new(HashMap::new()),
            broker_rate: Bucket::new(config.setting_i64("max.connection.creation.rate")),
            broker_max: Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            refused_ip_log: RareLog::new(),
            refused_max_log: RareLog::new(),
            throttled_ip_log: RareLog::new(),
            throttled_held: Arc::new(Semaphore::new(MAX_THROTTLED_HELD)),
        })
    }

    /// The connection limit of an address.
    pub fn limit_for(&self, ip: IpAddr) -> usize {
        let ip = canonical(ip);
        self.overrides.get(&ip).copied().unwrap_or(self.per_ip)
    }

    /// The connections open from an address.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(&canonical(ip)).copied().unwrap_or(0)
    }
}

/// An IPv4 address seen through an IPv6 socket counts as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One listener's limits.
pub struct ListenerLimits {
    pub broker: Arc<ConnectionLimits>,
    rate: Option<Mutex<Bucket>>,
    max: Option<(Arc<Semaphore>, usize)>,
    /// The inter-broker listener obeys only its own rate, as in Kafka.
    inter_broker: bool,
}

impl ListenerLimits {
    pub fn new(
        broker: Arc<ConnectionLimits>,
        config: &BrokerConfig,
        listener: &str,
    ) -> ListenerLimits {
        let get = |k: &str| -> Option<i64> {
            config
                .explicit
                .get(&format!(
                    "listener.name.{}.{k}",
                    listener.to_ascii_lowercase()
                ))
                .and_then(|v| v.trim().parse().ok())
        };
        let max = get("max.connections").filter(|n| *n < UNLIMITED).map(|n| {
            (
                Arc::new(Semaphore::new(n.max(0) as usize)),
                n.max(0) as usize,
            )
        });
        ListenerLimits {
            broker,
            rate: get("max.connection.creation.rate").and_then(Bucket::new),
            max,
            inter_broker: listener == config.inter_broker_listener,
        }
    }

    /// How long to wait before the connection just accepted may go on, by the listener's
    /// and (but on the inter-broker listener) the broker's creation rates.
    pub fn creation_delay(&self) -> Duration {
        let now = Instant::now();
        let take = |b: &Option<Mutex<Bucket>>| {
            b.as_ref().map_or(Duration::ZERO, |b| {
                b.lock().unwrap_or_else(|e| e.into_inner()).take(now)
            })
        };
        let listener = take(&self.rate);
        let broker = if self.inter_broker {
            Duration::ZERO
        } else {
            take(&self.broker.broker_rate)
        };
        listener.max(broker)
    }

    /// Counts a new connection from `ip`, or says which limit refuses it.
    pub fn admit(
        &self,
        ip: IpAddr,
        open_gauge: Gauge,
        broker_gauge: Gauge,
    ) -> Result<ConnectionSlot, Refused> {
        let ip = canonical(ip);
        {
            let limit = self.broker.limit_for(ip);
            let mut open = self.broker.open.lock().unwrap_or_else(|e| e.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= limit {
                if *n == 0 {
                    open.remove(&ip);
                }
                return Err(Refused::PerIp(limit));
            }
            *n += 1;
        }
        // From here on, dropping the slot gives back what it holds.
        let mut slot = ConnectionSlot {
            limits: self.broker.clone(),
            ip,
            listener_permit: None,
            broker_permit: None,
            open_gauge,
            broker_gauge,
            counted: false,
        };
        if let Some((sem, n)) = &self.max {
            slot.listener_permit = Some(
                sem.clone()
                    .try_acquire_owned()
                    .map_err(|_| Refused::Listener(*n))?,
            );
        }
        slot.broker_permit = Some(
            self.broker
                .broker_max
                .clone()
                .try_acquire_owned()
                .map_err(|_| Refused::Broker(self.broker.max_connections))?,
        );
        slot.open_gauge.inc();
        slot.broker_gauge.inc();
        slot.counted = true;
        Ok(slot)
    }
}

/// What one open connection holds of the limits; dropping it gives them back.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
    listener_permit: Option<OwnedSemaphorePermit>,
    broker_permit: Option<OwnedSemaphorePermit>,
    open_gauge: Gauge,
    broker_gauge: Gauge,
    counted: bool,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        drop(open);
        if self.counted {
            self.open_gauge.dec();
            self.broker_gauge.dec();
        }
        self.listener_permit.take();
        self.broker_permit.take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config(pairs: &[(&str, &str)]) -> BrokerConfig {
        let mut s: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.insert("log.dirs".into(), "/tmp/unused".into());
        BrokerConfig::from_settings(s).unwrap()
    }

    #[test]
    fn overrides_parse_hosts_addresses_and_v6() {
        assert_eq!(
            parse_overrides("127.0.0.1:5, localhost:7,[::1]:3,::2:4").unwrap(),
            vec![
                ("127.0.0.1".into(), 5),
                ("localhost".into(), 7),
                ("::1".into(), 3),
                ("::2".into(), 4)
            ]
        );
        assert!(parse_overrides("127.0.0.1").is_err());
        assert!(parse_overrides("127.0.0.1:x").is_err());
        assert!(parse_overrides(":3").is_err());
        assert!(parse_overrides("h:-1").is_err());
        assert_eq!(parse_overrides("").unwrap(), vec![]);
    }

    #[test]
    fn per_ip_slots_are_counted_and_given_back() {
        let c = config(&[
            ("max.connections.per.ip", "2"),
            ("max.connections.per.ip.overrides", "127.0.0.2:3"),
        ]);
        let limits = Arc::new(ConnectionLimits::new(&c).unwrap());
        let l = ListenerLimits::new(limits.clone(), &c, "PLAINTEXT");
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        let two: IpAddr = "127.0.0.2".parse().unwrap();
        let (g, total) = (Gauge::default(), Gauge::default());
        let admit = |ip| l.admit(ip, g.clone(), total.clone());
        let a = admit(one).unwrap();
        let _b = admit(one).unwrap();
        assert_eq!(admit(one).err(), Some(Refused::PerIp(2)));
        // An IPv4-mapped IPv6 address is the same address.
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(admit(mapped).is_err());
        let others: Vec<_> = (0..3).map(|_| admit(two).unwrap()).collect();
        assert_eq!(admit(two).err(), Some(Refused::PerIp(3)));
        assert_eq!((g.get(), total.get()), (5, 5));
        drop(a);
        assert_eq!(limits.open_from(one), 1);
        let _c = admit(one).unwrap();
        assert_eq!(limits.open_from(one), 2);
        drop(others);
        assert_eq!(limits.open_from(two), 0);
        assert_eq!(g.get(), 2);
    }

    #[test]
    fn listener_and_broker_maxima_give_back_the_ip_count() {
        let c = config(&[
            ("max.connections", "3"),
            ("listener.name.plaintext.max.connections", "1"),
        ]);
        let limits = Arc::new(ConnectionLimits::new(&c).unwrap());
        let l = ListenerLimits::new(limits.clone(), &c, "PLAINTEXT");
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (g, total) = (Gauge::default(), Gauge::default());
        let _a = l.admit(ip, g.clone(), total.clone()).unwrap();
        assert_eq!(
            l.admit(ip, g.clone(), total.clone()).err(),
            Some(Refused::Listener(1))
        );
        assert_eq!(limits.open_from(ip), 1);
        assert_eq!((g.get(), total.get()), (1, 1));
        // The broker-wide maximum: another listener's connections count too.
        let other = ListenerLimits::new(limits.clone(), &c, "SSL");
        let _b = other.admit(ip, g.clone(), total.clone()).unwrap();
        let _c = other.admit(ip, g.clone(), total.clone()).unwrap();
        assert_eq!(
            other.admit(ip, g.clone(), total.clone()).err(),
            Some(Refused::Broker(3))
        );
        assert_eq!(limits.open_from(ip), 3);
    }

    #[test]
    fn the_rate_delays_past_the_burst() {
        let mut b = Bucket::new(10).unwrap().into_inner().unwrap();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..12).map(|_| b.take(now)).collect();
        assert!(waits[..10].iter().all(|w| w.is_zero()));
        assert!(waits[10] > Duration::from_millis(90) && waits[10] <= Duration::from_millis(100));
        assert!(waits[11] > Duration::from_millis(190));
        // A second later, ten more tokens (less the two taken on credit).
        let later = now + Duration::from_secs(1);
        assert!(b.take(later).is_zero());
        assert!(Bucket::new(i32::MAX as i64).is_none());
    }

    #[test]
    fn rare_log_suppresses_and_counts() {
        let log = RareLog::new();
        let now = Instant::now();
        let mut logged = Vec::new();
        for i in 0..5 {
            log.log(now + Duration::from_millis(i), |n| logged.push(n));
        }
        log.log(now + LOG_EVERY, |n| logged.push(n));
        assert_eq!(logged, vec![0, 4]);
    }
}
