//! The broker: request handlers, the partition registry, idempotent producer state, group
//! commit, and configuration. It knows nothing about sockets: the server crate decodes
//! frames and calls [`Broker::handle`].

pub mod api;
pub mod authz;
pub mod broker;
pub mod cleaner;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controller_link;
pub mod dlt_metrics;
pub mod elections;
pub mod error;
pub mod fetcher;
pub mod groups;
mod internal;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod peer;
pub mod producer_state;
pub mod quota;
pub mod replication;
pub mod sasl;
pub mod store;
pub mod sync;
pub mod txns;

pub use api::{supported_versions, Reply, RequestContext, SUPPORTED_APIS};
pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;
