//! Redis replies as JSON, for the generic command paths of the C and C++ APIs.

use serde_json::{Map, Value as Json};

/// Converts a Redis reply to JSON: bulk strings become strings (or `\x<hex>` when not UTF-8),
/// nil becomes null, maps become objects when their keys are strings.
pub fn reply_to_json(v: &redis::Value) -> Json {
    use redis::Value as V;
    match v {
        V::Nil => Json::Null,
        V::Int(i) => Json::from(*i),
        V::BulkString(b) => bytes_to_json(b),
        V::Array(items) | V::Set(items) => Json::Array(items.iter().map(reply_to_json).collect()),
        V::SimpleString(s) => Json::String(s.clone()),
        V::Okay => Json::String("OK".into()),
        V::Map(pairs) => {
            let all_strings = pairs.iter().all(|(k, _)| matches!(reply_to_json(k), Json::String(_)));
            if all_strings {
                let mut m = Map::new();
                for (k, val) in pairs {
                    if let Json::String(key) = reply_to_json(k) {
                        m.insert(key, reply_to_json(val));
                    }
                }
                Json::Object(m)
            } else {
                Json::Array(
                    pairs.iter().map(|(k, val)| Json::Array(vec![reply_to_json(k), reply_to_json(val)])).collect(),
                )
            }
        }
        V::Double(d) => serde_json::Number::from_f64(*d).map(Json::Number).unwrap_or(Json::Null),
        V::Boolean(b) => Json::Bool(*b),
        V::VerbatimString { text, .. } => Json::String(text.clone()),
        V::ServerError(e) => Json::String(format!("ERR {e:?}")),
        other => Json::String(format!("{other:?}")),
    }
}

/// A byte string as JSON: text when it is UTF-8, else `\x<hex>`.
pub fn bytes_to_json(b: &[u8]) -> Json {
    match std::str::from_utf8(b) {
        Ok(s) => Json::String(s.to_string()),
        Err(_) => Json::String(format!("\\x{}", hex::encode(b))),
    }
}
