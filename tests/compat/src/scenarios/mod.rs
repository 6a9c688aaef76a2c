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
