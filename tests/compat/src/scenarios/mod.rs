//! Every scenario, by area: admin, produce/fetch/list_offsets/delete_records, groups and
//! offsets, consumer groups (KIP-848), ApiVersions and protocol framing.

mod admin;
mod data;
mod groups;
mod protocol;

pub use crate::Scenario;

/// All scenarios, in a stable order.
pub fn all() -> Vec<Scenario> {
    let mut v = admin::scenarios();
    v.extend(data::scenarios());
    v.extend(groups::scenarios());
    v.extend(protocol::scenarios());
    v
}

/// Waits until a broker's group coordinator and producer ids are ready (Kafka creates its
/// internal topics on first use), so that no scenario measures start-up.
pub fn warm_up(bootstrap: &str) -> anyhow::Result<()> {
    let mut c = crate::Client::connect(bootstrap)?;
    groups::wait_coordinator(&mut c, "skein-compat-warm-up")?;
    data::init_pid(&mut c)?;
    Ok(())
}
