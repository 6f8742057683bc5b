//! The monitor behind `rootstream::database::HealthMonitor`.

use super::{Observer, R};
use crate::error::Error;
use crate::ha::HealthMonitor;
use crate::runtime::block_on;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    unsafe extern "C++" {
        include!("message_observer.h");
        include!("rootstream-db/src/ffi/cxx/db.rs.h");
        type MessageObserver = crate::ffi::cxx::cache::MessageObserver;
        type DbBox = crate::ffi::cxx::db::DbBox;
    }

    extern "Rust" {
        type HealthBox;
        fn health_open(db: &DbBox, options_json: &str) -> Result<Box<HealthBox>>;
        fn health_start(self: &HealthBox) -> Result<()>;
        fn health_stop(self: &HealthBox) -> Result<()>;
        fn health_check_now(self: &HealthBox) -> Result<String>;
        fn health_status(self: &HealthBox) -> String;
        fn health_running(self: &HealthBox) -> bool;
        fn health_on_alert(self: &HealthBox, observer: UniquePtr<MessageObserver>) -> Result<()>;
        fn health_close(self: &HealthBox) -> Result<()>;
    }
}

use super::cache::MessageObserver;
use super::db::DbBox;

/// The monitor a C++ `HealthMonitor` holds; dropping it stops the checks.
pub struct HealthBox(HealthMonitor);

fn health_open(db: &DbBox, options_json: &str) -> R<Box<HealthBox>> {
    Ok(Box::new(HealthBox(HealthMonitor::from_json(db.0.clone(), options_json)?)))
}

impl HealthBox {
    fn health_start(&self) -> R<()> {
        Ok(self.0.start()?)
    }
    fn health_stop(&self) -> R<()> {
        Ok(self.0.stop()?)
    }
    fn health_check_now(&self) -> R<String> {
        Ok(block_on(self.0.check_now())?.to_string())
    }
    fn health_status(&self) -> String {
        self.0.status().to_string()
    }
    fn health_running(&self) -> bool {
        self.0.is_running()
    }
    fn health_on_alert(&self, observer: cxx::UniquePtr<MessageObserver>) -> R<()> {
        if observer.is_null() {
            return Err(Error::Null("observer").into());
        }
        let obs = Observer(observer);
        self.0.on_alert(move |a| obs.notify("alert", serde_json::to_string(a).unwrap_or_default().as_bytes()));
        Ok(())
    }
    fn health_close(&self) -> R<()> {
        Ok(self.0.close()?)
    }
}
