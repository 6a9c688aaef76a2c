//! The single node's metadata on disk: cluster id, topics (id, partition count, config
//! overrides) and the producer-id block, in one JSON file replaced atomically.
//!
//! A cluster will keep these facts in a Raft log instead; the broker only sees
//! [`MetadataImage`], so that change stays behind this file.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const META_FILE: &str = "skein-meta.json";

/// One topic as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredTopic {
    /// Kafka's topic id, base64url without padding.
    pub id: String,
    pub partitions: i32,
    #[serde(default)]
    pub configs: BTreeMap<String, String>,
}

/// Everything the node remembers apart from the partition logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataImage {
    pub cluster_id: String,
    pub node_id: i32,
    /// Producer ids below this may have been handed out; the next block starts here.
    pub producer_id_block_end: i64,
    pub topics: BTreeMap<String, StoredTopic>,
}

/// Reads and writes [`MetadataImage`] in a data directory.
pub struct MetaStore {
    dir: PathBuf,
}

impl MetaStore {
    pub fn new(dir: &Path) -> Self {
        MetaStore {
            dir: dir.to_path_buf(),
        }
    }

    /// Loads the image, or `None` on a fresh data directory.
    pub fn load(&self) -> io::Result<Option<MetadataImage>> {
        let path = self.dir.join(META_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the image durably: write a temp file, fsync, rename, fsync the directory.
    pub fn save(&self, image: &MetadataImage) -> io::Result<()> {
        let tmp = self.dir.join(format!("{META_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(image).map_err(io::Error::other)?;
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(META_FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::new(dir.path());
        assert!(store.load().unwrap().is_none());
        let mut image = MetadataImage {
            cluster_id: "abc".into(),
            node_id: 1,
            producer_id_block_end: 1000,
            topics: BTreeMap::new(),
        };
        image.topics.insert(
            "t".into(),
            StoredTopic {
                id: "x".into(),
                partitions: 3,
                configs: BTreeMap::new(),
            },
        );
        store.save(&image).unwrap();
        assert_eq!(store.load().unwrap(), Some(image));
    }
}
