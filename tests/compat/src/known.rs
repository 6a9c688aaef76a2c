//! The known, justified differences between Skein and Apache Kafka: scenario name -> reason.
//! A scenario whose observations differ must be listed here, and a listed scenario must
//! still differ, so the table (and docs/compatibility.md, generated from the results) stays
//! true.

pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The reason a scenario is allowed to differ, if it is.
pub fn reason(scenario: &str) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, r)| *r)
}
