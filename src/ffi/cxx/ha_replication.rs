//! The manager behind `rootstream::database::ReplicationManager`.

use super::config::ConfigBox;
use super::db::DbBox;
use super::R;
use crate::ha::{NodeSet, ReplicationManager, ReplicationOptions};
use crate::runtime::block_on;
use std::path::Path;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        type DbBox = crate::ffi::cxx::db::DbBox;
    }

    extern "Rust" {
        type ReplicationBox;
        fn replication_open(
            cfg: &ConfigBox,
            nodes: &str,
            data_dirs: &str,
            options_json: &str,
        ) -> Result<Box<ReplicationBox>>;
        fn status_json(self: &ReplicationBox) -> Result<String>;
        fn record_status(self: &ReplicationBox, db: &DbBox) -> Result<u64>;
        fn query_read_json(self: &ReplicationBox, sql: &str, params_json: &str) -> Result<String>;
        fn add_replica(self: &ReplicationBox, name: &str, url: &str, data_dir: &str, port: u16) -> Result<String>;
        fn remove_replica(self: &ReplicationBox, name: &str) -> Result<String>;
        fn promote(self: &ReplicationBox, name: &str) -> Result<()>;
        fn rejoin(self: &ReplicationBox, name: &str, new_primary: &str) -> Result<String>;
        fn refresh(self: &ReplicationBox);
    }
}

/// The replication manager a C++ `ReplicationManager` holds.
pub struct ReplicationBox(ReplicationManager);

/// Empty `nodes` takes the nodes (and data directories) from the environment.
fn replication_open(cfg: &ConfigBox, nodes: &str, data_dirs: &str, options_json: &str) -> R<Box<ReplicationBox>> {
    let set = if nodes.is_empty() {
        if !data_dirs.is_empty() {
            return Err(crate::Error::InvalidArgument("data_dirs given without nodes".into()).into());
        }
        NodeSet::from_env()?
    } else {
        NodeSet::parse(nodes, (!data_dirs.is_empty()).then_some(data_dirs))?
    };
    let opts = ReplicationOptions::from_json(Some(options_json))?;
    Ok(Box::new(ReplicationBox(ReplicationManager::new(set, &cfg.0, opts)?)))
}

impl ReplicationBox {
    fn status_json(&self) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.status())?)?)
    }

    fn record_status(&self, db: &DbBox) -> R<u64> {
        Ok(block_on(self.0.record_status(&db.0))?)
    }

    fn query_read_json(&self, sql: &str, params_json: &str) -> R<String> {
        let params = (!params_json.is_empty()).then_some(params_json);
        Ok(serde_json::to_string(&block_on(self.0.query_read(sql, params))?)?)
    }

    fn add_replica(&self, name: &str, url: &str, data_dir: &str, port: u16) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.add_replica(name, url, Path::new(data_dir), port))?)?)
    }

    fn remove_replica(&self, name: &str) -> R<String> {
        Ok(serde_json::to_string(&block_on(self.0.remove_replica(name))?)?)
    }

    fn promote(&self, name: &str) -> R<()> {
        Ok(block_on(self.0.promote(name))?)
    }

    fn rejoin(&self, name: &str, new_primary: &str) -> R<String> {
        let p = (!new_primary.is_empty()).then_some(new_primary);
        Ok(serde_json::to_string(&block_on(self.0.rejoin(name, p))?)?)
    }

    fn refresh(&self) {
        self.0.refresh()
    }
}
