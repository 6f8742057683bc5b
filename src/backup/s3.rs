//! S3-compatible object storage for backup repositories.

use super::storage::{ObjectWriter, Storage};
use crate::config::Config;
use crate::error::{Error, Result};
use std::io::Read;

/// A repository in an S3 bucket.
#[derive(Debug)]
pub struct S3Storage {}

impl S3Storage {
    pub fn from_config(_cfg: &Config) -> Result<Self> {
        Err(Error::Config("S3 storage is being built".into()))
    }
}

impl Storage for S3Storage {
    fn kind(&self) -> &'static str {
        "s3"
    }
    fn location(&self, key: &str) -> String {
        key.to_string()
    }
    fn create(&self, _key: &str) -> Result<Box<dyn ObjectWriter>> {
        unimplemented!()
    }
    fn open(&self, _key: &str) -> Result<Box<dyn Read + Send>> {
        unimplemented!()
    }
    fn size(&self, _key: &str) -> Result<Option<u64>> {
        unimplemented!()
    }
    fn list(&self, _prefix: &str) -> Result<Vec<(String, u64)>> {
        unimplemented!()
    }
    fn delete(&self, _key: &str) -> Result<()> {
        unimplemented!()
    }
}
