//! Leader elections the active controller makes on its own, by policy: automatic
//! preferred-leader balancing (`auto.leader.rebalance.enable`, every
//! `leader.imbalance.check.interval.seconds`, when a broker's share of preferred partitions led
//! by others exceeds `leader.imbalance.per.broker.percentage`) and unclean elections of
//! leaderless partitions whose topic allows them (`unclean.leader.election.enable`, KIP-704).
//! Both run from the controller's periodic tick ([`Broker::quorum_tick`]); the decisions are
//! `skein_metadata`'s [`QuorumController::balance_leaders`] and
//! [`QuorumController::elect_unclean_leaders`].
//!
//! [`QuorumController::balance_leaders`]: skein_metadata::QuorumController::balance_leaders
//! [`QuorumController::elect_unclean_leaders`]: skein_metadata::QuorumController::elect_unclean_leaders

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::broker::Broker;

impl Broker {
    /// The active controller's policy elections, once per tick: unclean elections where
    /// allowed, and leader balancing when its interval has passed.
    pub(crate) async fn policy_elections(self: &Arc<Self>) {
        let now = self.now_ms();
        let unclean = self
            .quorum
            .run(now, |c, image, _| Ok(c.elect_unclean_leaders(image, None)))
            .await;
        if let Ok(moved) = unclean {
            for m in moved {
                if m.unclean {
                    tracing::warn!(topic = %m.topic, partition = m.partition, leader = m.to, "unclean leader election: a replica outside the ISR leads; records only the old ISR had are lost");
                } else {
                    tracing::info!(topic = %m.topic, partition = m.partition, leader = m.to, "elected a leader for a leaderless partition");
                }
            }
        }
        if !self.config.auto_leader_rebalance {
            return;
        }
        let interval = self.config.leader_imbalance_check_interval_ms as i64;
        let next = &self.quorum.next_leader_balance_ms;
        let due = next.load(Ordering::Relaxed);
        if due < 0 {
            // Newly active: the first check one interval from now, as Kafka schedules it.
            next.store(now.saturating_add(interval), Ordering::Relaxed);
            return;
        }
        if now < due {
            return;
        }
        next.store(now.saturating_add(interval), Ordering::Relaxed);
        let balanced = self
            .quorum
            .run(now, |c, image, _| Ok(c.balance_leaders(image)))
            .await;
        match balanced {
            Ok(moved) => {
                for m in moved {
                    tracing::info!(topic = %m.topic, partition = m.partition, from = m.from, to = m.to, "moved leadership back to the preferred replica");
                }
            }
            Err(e) => tracing::info!("leader balancing: {}: {}", e.code, e.message),
        }
    }
}
