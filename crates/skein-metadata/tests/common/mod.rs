//! The quorum controller driven by hand, shared by the election and reassignment tests: a
//! controller, the image its committed records build, and the calls every such test makes.
#![allow(dead_code)] // each test crate uses its own subset

use skein_metadata::controller::{Heartbeat, NewTopic, RegisterBroker};
use skein_metadata::image::{Endpoint, PartitionState};
use skein_metadata::{encode_batch, ControllerConfig, MetadataImage, Outcome, QuorumController};
use skein_protocol::Uuid;

pub struct Cluster {
    pub ctl: QuorumController,
    pub image: MetadataImage,
    pub offset: u64,
    pub now: u64,
}

impl Cluster {
    /// Brokers `1..=brokers`, registered and unfenced.
    pub fn new(config: ControllerConfig, brokers: i32) -> Cluster {
        let mut c = Cluster {
            ctl: QuorumController::new(config),
            image: MetadataImage::new(),
            offset: 0,
            now: 1_000,
        };
        for id in 1..=brokers {
            let req = RegisterBroker {
                broker_id: id,
                incarnation_id: Uuid([id as u8; 16]),
                endpoints: vec![Endpoint {
                    name: "PLAINTEXT".into(),
                    host: "localhost".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: None,
                previous_broker_epoch: -1,
            };
            let out = c.ctl.register_broker(&c.image, &req, c.now).unwrap();
            c.commit(out);
        }
        for id in 1..=brokers {
            c.heartbeat(id, false);
        }
        c
    }

    /// Applies the outcome's records as the next committed entry; returns its reply.
    pub fn commit<R>(&mut self, out: Outcome<R>) -> R {
        if !out.records.is_empty() {
            self.offset += 1;
            self.image
                .apply_entry(self.offset, &encode_batch(&out.records))
                .expect("controller records apply");
        }
        out.reply
    }

    /// A heartbeat from broker `id`, caught up, asking to be fenced or not.
    pub fn heartbeat(&mut self, id: i32, want_fence: bool) {
        let hb = Heartbeat {
            broker_id: id,
            broker_epoch: self.image.broker(id).unwrap().epoch,
            metadata_offset: self.offset,
            want_fence,
            want_shutdown: false,
        };
        let out = self.ctl.heartbeat(&self.image, &hb, self.now).unwrap();
        self.commit(out);
    }

    /// Creates `name` with one partition per entry of `assignments` (replicas in order).
    pub fn create(&mut self, name: &str, assignments: Vec<Vec<i32>>) -> Uuid {
        let out = self.ctl.create_topics(
            &self.image,
            &[NewTopic {
                name: name.into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments,
                configs: vec![],
            }],
            false,
            7,
        );
        self.commit(out)[0].result.clone().unwrap().topic_id
    }

    pub fn part(&self, topic: Uuid, p: i32) -> PartitionState {
        self.image.partition(topic, p).unwrap().clone()
    }
}
