//! Entry points for the fuzz targets in `fuzz/` (built only with the `fuzzing` feature).
//!
//! Each function feeds untrusted bytes to one parser of outside input, the way the library
//! itself does, and leaves it to the parser to refuse what is malformed. They reach parsers that
//! are private to their modules without making those modules public; nothing here is part of
//! the supported API.

use crate::error::Result;
use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type};

/// Parses `json` as a statement's parameter list and encodes every parameter as the type with
/// OID `type_oid` (unknown OIDs fall back to `text`); the first error is returned.
pub fn encode_params(json: &str, type_oid: u32) -> Result<Vec<Option<Vec<u8>>>> {
    let ty = Type::from_oid(type_oid).unwrap_or(Type::TEXT);
    let params = crate::db::value::parse_params(Some(json))?;
    let mut out = Vec::with_capacity(params.len());
    for p in &params {
        let mut buf = BytesMut::new();
        match p.to_sql(&ty, &mut buf) {
            Ok(IsNull::Yes) => out.push(None),
            Ok(IsNull::No) => out.push(Some(buf.to_vec())),
            Err(e) => return Err(crate::Error::Query(e.to_string())),
        }
    }
    Ok(out)
}

/// Encodes a decimal string as a binary NUMERIC.
pub fn encode_numeric(text: &str) -> std::result::Result<Vec<u8>, String> {
    crate::db::value::fuzz_encode_numeric(text)
}

/// Decodes a binary NUMERIC as the server sends it.
pub fn decode_numeric(raw: &[u8]) -> Result<String> {
    crate::db::value::fuzz_decode_numeric(raw)
}

/// Parses an S3 XML response body.
pub fn s3_xml(doc: &str) -> std::result::Result<(), String> {
    crate::backup::s3::fuzz_xml(doc)
}

/// Parses an S3 `ListObjectsV2` response body into (key, size) entries.
pub fn s3_list(body: &str) -> std::result::Result<Vec<(String, u64)>, String> {
    crate::backup::s3::fuzz_list(body)
}

/// Applies the text of a configuration file to a default configuration.
pub fn config_text(text: &str) -> Result<crate::Config> {
    let mut cfg = crate::Config::default();
    cfg.apply_str(text, "fuzz.conf")?;
    Ok(cfg)
}

/// Builds a Redis command from its JSON argument list, as `exec`/`exec_atomic` do.
pub fn redis_command(json: &str) -> Result<()> {
    crate::cache::client::fuzz_command(json)
}
