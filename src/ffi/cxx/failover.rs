//! The manager behind `rootstream::database::FailoverManager`.

use super::{nonempty, Observer, R};
use crate::error::Error;
use crate::ha::FailoverManager;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("rootstream-db/src/ffi/cxx/config.rs.h");
        type ConfigBox = crate::ffi::cxx::config::ConfigBox;
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        type DbBox = crate::ffi::cxx::db::DbBox;
        include!("rootstream-db/src/ffi/cxx/cache.rs.h");
        type MessageObserver = crate::ffi::cxx::cache::MessageObserver;
        include!("rootstream-db/src/ffi/cxx/sync.rs.h");
        type SyncBox = crate::ffi::cxx::sync::SyncBox;
    }

    extern "Rust" {
        type FailoverBox;
        fn failover_open(cfg: &ConfigBox, options_json: &str) -> Result<Box<FailoverBox>>;
        fn start(self: &FailoverBox) -> Result<()>;
        fn stop(self: &FailoverBox);
        fn tick(self: &FailoverBox);
        fn attach_db(self: &FailoverBox, db: &DbBox);
        fn attach_sync(self: &FailoverBox, sync: &SyncBox);
        fn switchover(self: &FailoverBox, target: &str) -> Result<String>;
        fn failover(self: &FailoverBox, target: &str) -> Result<String>;
        fn rejoin(self: &FailoverBox, node: &str) -> Result<()>;
        fn status_json(self: &FailoverBox) -> String;
        fn is_leader(self: &FailoverBox) -> bool;
        fn on_role_change(self: &FailoverBox, observer: UniquePtr<MessageObserver>) -> Result<()>;
    }
}

use super::config::ConfigBox;
use super::db::DbBox;
use super::sync::SyncBox;
use bridge::MessageObserver;

/// The manager a C++ `FailoverManager` holds; dropping it stops the loop and gives up the lease.
pub struct FailoverBox(FailoverManager);

impl Drop for FailoverBox {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn failover_open(cfg: &ConfigBox, options_json: &str) -> R<Box<FailoverBox>> {
    Ok(Box::new(FailoverBox(FailoverManager::open(&cfg.0, nonempty(options_json))?)))
}

impl FailoverBox {
    fn start(&self) -> R<()> {
        Ok(self.0.start()?)
    }

    fn stop(&self) {
        self.0.stop();
    }

    fn tick(&self) {
        self.0.tick();
    }

    fn attach_db(&self, db: &DbBox) {
        self.0.attach_database(db.0.clone());
    }

    fn attach_sync(&self, sync: &SyncBox) {
        self.0.attach_sync(sync.0.clone());
    }

    fn switchover(&self, target: &str) -> R<String> {
        super::to_json(&self.0.switchover(target)?)
    }

    fn failover(&self, target: &str) -> R<String> {
        super::to_json(&self.0.failover(nonempty(target))?)
    }

    fn rejoin(&self, node: &str) -> R<()> {
        Ok(self.0.rejoin(node)?)
    }

    fn status_json(&self) -> String {
        self.0.status().to_string()
    }

    fn is_leader(&self) -> bool {
        self.0.lease().holds()
    }

    fn on_role_change(&self, observer: cxx::UniquePtr<MessageObserver>) -> R<()> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        self.0.on_role_change(move |c| {
            obs.notify("role_change", serde_json::to_string(c).unwrap_or_default().as_bytes())
        });
        Ok(())
    }
}
