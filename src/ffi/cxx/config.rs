//! Configuration behind `rootstream::Config`.

use super::R;
use crate::config::Config;

#[cxx::bridge(namespace = "rootstream::ffi")]
mod bridge {
    extern "Rust" {
        type ConfigBox;
        fn config_new() -> Box<ConfigBox>;
        fn config_from_env() -> Result<Box<ConfigBox>>;
        fn set(self: &mut ConfigBox, key: &str, value: &str) -> Result<()>;
        fn load_file(self: &mut ConfigBox, path: &str) -> Result<()>;
        fn debug_string(self: &ConfigBox) -> String;
    }
}

/// The configuration every other bridge object is built from.
pub struct ConfigBox(pub(crate) Config);

// SAFETY: the id names the C++ declaration cxx generates for `ConfigBox` in config.rs.h.
unsafe impl cxx::ExternType for ConfigBox {
    type Id = cxx::type_id!("rootstream::ffi::ConfigBox");
    type Kind = cxx::kind::Opaque;
}

fn config_new() -> Box<ConfigBox> {
    Box::new(ConfigBox(Config::default()))
}

fn config_from_env() -> R<Box<ConfigBox>> {
    Ok(Box::new(ConfigBox(Config::from_env()?)))
}

impl ConfigBox {
    fn set(&mut self, key: &str, value: &str) -> R<()> {
        Ok(self.0.set(key, value)?)
    }
    fn load_file(&mut self, path: &str) -> R<()> {
        Ok(self.0.apply_file(std::path::Path::new(path))?)
    }
    fn debug_string(&self) -> String {
        format!("{:?}", self.0)
    }
}
