//! The repository the configuration names: S3-compatible object storage when `backup_s3_url`
//! is set, else the local directory `backup_dir`. The one place that knows both kinds of
//! [`Storage`], so `storage` and `s3` need not know each other beyond the trait.

use super::s3::S3Storage;
use super::storage::{LocalStorage, Storage};
use crate::config::Config;
use crate::error::{Error, Result};
use std::sync::Arc;

/// The repository the configuration names: `backup_s3_url` when set, else `backup_dir`.
pub fn from_config(cfg: &Config) -> Result<Arc<dyn Storage>> {
    if cfg.backup_s3_url.is_some() {
        return Ok(Arc::new(S3Storage::from_config(cfg)?));
    }
    let dir = cfg.backup_dir.clone().ok_or_else(|| {
        Error::Config("no backup repository: set backup_dir (ROOTSTREAM_BACKUP_DIR) or backup_s3_url".into())
    })?;
    Ok(Arc::new(LocalStorage::new(dir)))
}
