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

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value as V;
    use serde_json::json;

    fn bulk(s: &str) -> V {
        V::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn resp2_replies_become_their_json_values() {
        assert_eq!(reply_to_json(&V::Nil), Json::Null);
        assert_eq!(reply_to_json(&V::Int(-3)), json!(-3));
        assert_eq!(reply_to_json(&V::Okay), json!("OK"));
        assert_eq!(reply_to_json(&V::SimpleString("PONG".into())), json!("PONG"));
        assert_eq!(reply_to_json(&V::Array(vec![bulk("a"), V::Nil, V::Int(1)])), json!(["a", null, 1]));
        assert_eq!(reply_to_json(&V::BulkString(vec![0xff, 0x00, 0x41])), json!("\\xff0041"));
    }

    #[test]
    fn resp3_replies_keep_their_shape() {
        let by_name = V::Map(vec![(bulk("role"), bulk("master")), (bulk("port"), V::Int(6379))]);
        assert_eq!(reply_to_json(&by_name), json!({"role": "master", "port": 6379}));
        // Keys that are not strings: a list of [key, value] pairs, so nothing is lost.
        let by_number = V::Map(vec![(V::Int(1), bulk("one")), (V::Int(2), V::Nil)]);
        assert_eq!(reply_to_json(&by_number), json!([[1, "one"], [2, null]]));
        assert_eq!(reply_to_json(&V::Set(vec![bulk("x")])), json!(["x"]));
        assert_eq!(reply_to_json(&V::Double(1.5)), json!(1.5));
        assert_eq!(reply_to_json(&V::Double(f64::NAN)), Json::Null, "JSON has no NaN");
        assert_eq!(reply_to_json(&V::Boolean(true)), json!(true));
        let verbatim = V::VerbatimString { format: redis::VerbatimFormat::Text, text: "hello".into() };
        assert_eq!(reply_to_json(&verbatim), json!("hello"));
    }
}
