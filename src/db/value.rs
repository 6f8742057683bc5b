//! Conversions between JSON values and PostgreSQL's binary wire format, so that the C and C++
//! APIs can pass parameters and receive rows as JSON while the statements stay parameterized.

use crate::error::{Error, Result};
use bytes::{BufMut, BytesMut};
use serde_json::{Map, Number, Value};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};
use tokio_postgres::Row;

/// A JSON value bound to a statement parameter; it is encoded according to the type the
/// server inferred for that parameter (`$1::int`, a column type, ...).
#[derive(Debug)]
pub struct JsonParam(pub Value);

fn bad(ty: &Type, v: &Value) -> Box<dyn std::error::Error + Sync + Send> {
    format!("cannot use JSON value {v} as a parameter of type {ty}").into()
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl ToSql for JsonParam {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let v = &self.0;
        if v.is_null() {
            return Ok(IsNull::Yes);
        }
        match *ty {
            Type::BOOL => match v {
                Value::Bool(b) => b.to_sql(ty, out),
                Value::String(s) if s == "true" || s == "false" => (s == "true").to_sql(ty, out),
                _ => Err(bad(ty, v)),
            },
            Type::INT2 => {
                let n = int_of(v).ok_or_else(|| bad(ty, v))?;
                i16::try_from(n).map_err(|_| bad(ty, v))?.to_sql(ty, out)
            }
            Type::INT4 => {
                let n = int_of(v).ok_or_else(|| bad(ty, v))?;
                i32::try_from(n).map_err(|_| bad(ty, v))?.to_sql(ty, out)
            }
            Type::INT8 => int_of(v).ok_or_else(|| bad(ty, v))?.to_sql(ty, out),
            Type::OID => {
                let n = int_of(v).ok_or_else(|| bad(ty, v))?;
                u32::try_from(n).map_err(|_| bad(ty, v))?.to_sql(ty, out)
            }
            Type::FLOAT4 => (float_of(v).ok_or_else(|| bad(ty, v))? as f32).to_sql(ty, out),
            Type::FLOAT8 => float_of(v).ok_or_else(|| bad(ty, v))?.to_sql(ty, out),
            Type::JSON | Type::JSONB => v.to_sql(ty, out),
            Type::BYTEA => {
                let s = v.as_str().ok_or_else(|| bad(ty, v))?;
                let hexpart = s.strip_prefix("\\x").ok_or("bytea parameters are strings in the form \\x<hex>")?;
                let bytes = hex::decode(hexpart).map_err(|e| format!("bad bytea hex: {e}"))?;
                out.put_slice(&bytes);
                Ok(IsNull::No)
            }
            Type::TIMESTAMPTZ => {
                let s = v.as_str().ok_or_else(|| bad(ty, v))?;
                let t = chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| format!("timestamptz parameters are RFC 3339 strings: {e}"))?
                    .with_timezone(&chrono::Utc);
                t.to_sql(ty, out)
            }
            Type::TIMESTAMP => {
                let s = v.as_str().ok_or_else(|| bad(ty, v))?;
                let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                    .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
                    .map_err(|e| format!("timestamp parameters look like 2024-01-31T12:00:00: {e}"))?;
                t.to_sql(ty, out)
            }
            Type::DATE => {
                let s = v.as_str().ok_or_else(|| bad(ty, v))?;
                let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|e| format!("date parameters look like 2024-01-31: {e}"))?;
                d.to_sql(ty, out)
            }
            Type::UUID => {
                let s = v.as_str().ok_or_else(|| bad(ty, v))?;
                let h: String = s.chars().filter(|c| *c != '-').collect();
                let bytes = hex::decode(&h).map_err(|_| bad(ty, v))?;
                if bytes.len() != 16 {
                    return Err(bad(ty, v));
                }
                out.put_slice(&bytes);
                Ok(IsNull::No)
            }
            Type::NUMERIC => {
                let s = as_text(v).ok_or_else(|| bad(ty, v))?;
                encode_numeric(&s, out).map_err(|e| e.into())
            }
            _ => {
                if is_texty(ty) {
                    let s = as_text(v).ok_or_else(|| bad(ty, v))?;
                    out.put_slice(s.as_bytes());
                    Ok(IsNull::No)
                } else if let Kind::Array(elem) = ty.kind() {
                    encode_array(elem, v, out)
                } else {
                    Err(format!(
                        "parameters of type {ty} are not supported; cast the parameter to text in SQL ($1::text::{ty})"
                    )
                    .into())
                }
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn is_texty(ty: &Type) -> bool {
    matches!(*ty, Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN)
        || ty.name() == "citext"
        || matches!(ty.kind(), Kind::Enum(_))
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18).map(|f| f as i64))
        }
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn encode_array(
    elem: &Type,
    v: &Value,
    out: &mut BytesMut,
) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
    let items = v.as_array().ok_or_else(|| bad(elem, v))?;
    // One-dimensional array: ndim, has-null flag, element oid, then (length, lower bound).
    out.put_slice(&1i32.to_be_bytes());
    let has_null = items.iter().any(|i| i.is_null()) as i32;
    out.put_slice(&has_null.to_be_bytes());
    out.put_slice(&elem.oid().to_be_bytes());
    out.put_slice(&(items.len() as i32).to_be_bytes());
    out.put_slice(&1i32.to_be_bytes());
    for item in items {
        let mut buf = BytesMut::new();
        match JsonParam(item.clone()).to_sql(elem, &mut buf)? {
            IsNull::Yes => out.put_slice(&(-1i32).to_be_bytes()),
            IsNull::No => {
                out.put_slice(&(buf.len() as i32).to_be_bytes());
                out.put_slice(&buf);
            }
        }
    }
    Ok(IsNull::No)
}

/// The largest display scale (digits after the point) of a NUMERIC.
const NUMERIC_DSCALE_MAX: usize = 0x3FFF;

/// Encodes a decimal string into PostgreSQL's binary NUMERIC (base-10000 digits).
fn encode_numeric(s: &str, out: &mut BytesMut) -> std::result::Result<IsNull, String> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a decimal number"));
    }
    let int_part = int_part.trim_start_matches('0');
    // PostgreSQL's limits: a display scale of at most 16383 digits and a weight that fits in
    // i16 (here: at most 32767 groups, 131068 digits, before the point).
    if frac_part.len() > NUMERIC_DSCALE_MAX || int_part.len().div_ceil(4) > i16::MAX as usize {
        return Err(format!(
            "a number with {} digits before the point and {} after it is beyond a numeric's limits",
            int_part.len(),
            frac_part.len()
        ));
    }
    let dscale = frac_part.len() as i16;
    // Pad the integer part on the left and the fraction on the right to whole groups of 4.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let digits_str = format!("{}{}{}{}", "0".repeat(int_pad), int_part, frac_part, "0".repeat(frac_pad));
    let mut groups: Vec<i16> =
        digits_str.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap().parse::<i16>().unwrap()).collect();
    let mut weight = ((int_part.len() + int_pad) / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if neg && !groups.is_empty() { 0x4000 } else { 0 };
    out.put_slice(&(groups.len() as i16).to_be_bytes());
    out.put_slice(&weight.to_be_bytes());
    out.put_slice(&sign.to_be_bytes());
    out.put_slice(&dscale.to_be_bytes());
    for g in groups {
        out.put_slice(&g.to_be_bytes());
    }
    Ok(IsNull::No)
}

/// The raw bytes of a column, whatever its type; converted to JSON by [`column_to_json`].
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }
    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn decode_numeric(raw: &[u8]) -> Result<String> {
    let rd = |i: usize| -> Result<i16> {
        raw.get(i..i + 2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| Error::Query("truncated numeric".into()))
    };
    let corrupt = |what: &str| Error::Query(format!("corrupt numeric: {what}"));
    // The counts are unsigned 16-bit on the wire but read as i16, as PostgreSQL writes them:
    // a negative digit count or a scale beyond PostgreSQL's limit is corrupt, not a length.
    let ndigits = usize::try_from(rd(0)?).map_err(|_| corrupt("negative digit count"))?;
    let weight = rd(2)? as i32;
    let sign = rd(4)? as u16;
    let dscale = usize::try_from(rd(6)?)
        .ok()
        .filter(|d| *d <= NUMERIC_DSCALE_MAX)
        .ok_or_else(|| corrupt("display scale out of range"))?;
    if raw.len() != 8 + 2 * ndigits {
        return Err(corrupt("length does not match the digit count"));
    }
    if !matches!(sign, 0 | 0x4000 | 0xC000 | 0xD000 | 0xF000) {
        return Err(corrupt("unknown sign"));
    }
    if sign == 0xC000 {
        return Ok("NaN".into());
    }
    if sign == 0xD000 {
        return Ok("Infinity".into());
    }
    if sign == 0xF000 {
        return Ok("-Infinity".into());
    }
    let mut digits = Vec::with_capacity(ndigits);
    for i in 0..ndigits {
        digits.push(rd(8 + 2 * i)?);
    }
    let mut int_s = String::new();
    for w in 0..=weight.max(-1) {
        let g = digits.get(w as usize).copied().unwrap_or(0);
        if int_s.is_empty() {
            if g != 0 {
                int_s = g.to_string();
            }
        } else {
            int_s.push_str(&format!("{g:04}"));
        }
    }
    if int_s.is_empty() {
        int_s.push('0');
    }
    let mut frac = String::new();
    let mut idx = weight + 1;
    while frac.len() < dscale {
        let g = if idx < 0 { 0 } else { digits.get(idx as usize).copied().unwrap_or(0) };
        frac.push_str(&format!("{g:04}"));
        idx += 1;
    }
    frac.truncate(dscale);
    let mut s = String::new();
    if sign == 0x4000 {
        s.push('-');
    }
    s.push_str(&int_s);
    if dscale > 0 {
        s.push('.');
        s.push_str(&frac);
    }
    Ok(s)
}

fn fmt_uuid(b: &[u8]) -> String {
    let h = hex::encode(b);
    if h.len() != 32 {
        return h;
    }
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Converts column `idx` of `row` to JSON. Numbers stay numbers (NUMERIC becomes a string to
/// keep its precision), timestamps become RFC 3339 strings, bytea becomes `\x<hex>`.
pub fn column_to_json(row: &Row, idx: usize) -> Result<Value> {
    let col = &row.columns()[idx];
    let ty = col.type_();
    let raw: Option<Raw> = row.try_get(idx).map_err(|e| Error::Query(e.to_string()))?;
    let Some(Raw(bytes)) = raw else { return Ok(Value::Null) };
    let get_err = |e: tokio_postgres::Error| Error::Query(format!("column {}: {e}", col.name()));
    Ok(match *ty {
        Type::BOOL => Value::Bool(row.try_get::<_, bool>(idx).map_err(get_err)?),
        Type::INT2 => Value::from(row.try_get::<_, i16>(idx).map_err(get_err)?),
        Type::INT4 => Value::from(row.try_get::<_, i32>(idx).map_err(get_err)?),
        Type::INT8 => Value::from(row.try_get::<_, i64>(idx).map_err(get_err)?),
        Type::OID => Value::from(row.try_get::<_, u32>(idx).map_err(get_err)?),
        Type::FLOAT4 => float_json(row.try_get::<_, f32>(idx).map_err(get_err)? as f64),
        Type::FLOAT8 => float_json(row.try_get::<_, f64>(idx).map_err(get_err)?),
        Type::JSON | Type::JSONB => row.try_get::<_, Value>(idx).map_err(get_err)?,
        Type::TIMESTAMPTZ => Value::String(
            row.try_get::<_, chrono::DateTime<chrono::Utc>>(idx)
                .map_err(get_err)?
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
        Type::TIMESTAMP => Value::String(
            row.try_get::<_, chrono::NaiveDateTime>(idx).map_err(get_err)?.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        ),
        Type::DATE => Value::String(row.try_get::<_, chrono::NaiveDate>(idx).map_err(get_err)?.to_string()),
        Type::BYTEA => Value::String(format!("\\x{}", hex::encode(bytes))),
        Type::UUID => Value::String(fmt_uuid(bytes)),
        Type::NUMERIC => Value::String(decode_numeric(bytes)?),
        _ if is_texty(ty) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        _ => {
            if let Kind::Array(elem) = ty.kind() {
                if matches!(*elem, Type::TEXT | Type::VARCHAR) {
                    let v: Vec<Option<String>> = row.try_get(idx).map_err(get_err)?;
                    return Ok(Value::from(
                        v.into_iter().map(|s| s.map(Value::String).unwrap_or(Value::Null)).collect::<Vec<_>>(),
                    ));
                }
                if *elem == Type::INT8 {
                    let v: Vec<Option<i64>> = row.try_get(idx).map_err(get_err)?;
                    return Ok(Value::from(
                        v.into_iter().map(|s| s.map(Value::from).unwrap_or(Value::Null)).collect::<Vec<_>>(),
                    ));
                }
                if *elem == Type::INT4 {
                    let v: Vec<Option<i32>> = row.try_get(idx).map_err(get_err)?;
                    return Ok(Value::from(
                        v.into_iter().map(|s| s.map(Value::from).unwrap_or(Value::Null)).collect::<Vec<_>>(),
                    ));
                }
            }
            return Err(Error::Query(format!(
                "column {:?} has type {ty}, which has no JSON mapping; cast it in SQL (e.g. {}::text)",
                col.name(),
                col.name()
            )));
        }
    })
}

fn float_json(f: f64) -> Value {
    Number::from_f64(f).map(Value::Number).unwrap_or_else(|| Value::String(f.to_string()))
}

/// Converts a row to a JSON object keyed by column name.
pub fn row_to_json(row: &Row) -> Result<Value> {
    let mut obj = Map::with_capacity(row.len());
    for i in 0..row.len() {
        obj.insert(row.columns()[i].name().to_string(), column_to_json(row, i)?);
    }
    Ok(Value::Object(obj))
}

/// Converts rows to a JSON array of objects.
pub fn rows_to_json(rows: &[Row]) -> Result<Value> {
    rows.iter().map(row_to_json).collect::<Result<Vec<_>>>().map(Value::Array)
}

/// Parses the parameter list the C and C++ APIs pass: a JSON array, or empty/absent for none.
pub fn parse_params(json: Option<&str>) -> Result<Vec<JsonParam>> {
    match json.map(str::trim) {
        None | Some("") => Ok(Vec::new()),
        Some(text) => match serde_json::from_str::<Value>(text)? {
            Value::Array(items) => Ok(items.into_iter().map(JsonParam).collect()),
            other => Err(Error::Json(format!("parameters must be a JSON array, got {other}"))),
        },
    }
}

#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_encode_numeric(s: &str) -> std::result::Result<Vec<u8>, String> {
    let mut b = BytesMut::new();
    encode_numeric(s, &mut b)?;
    Ok(b.to_vec())
}

#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_decode_numeric(raw: &[u8]) -> Result<String> {
    decode_numeric(raw)
}

/// Borrows JSON parameters in the form tokio-postgres takes.
pub fn param_refs(params: &[JsonParam]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_numeric(s, &mut b).unwrap();
        b.to_vec()
    }

    #[test]
    fn numeric_round_trips_through_the_binary_format() {
        for s in ["0", "1", "-1", "12345.678", "0.0001", "-0.5", "10000", "123456789012345678901234567890.5", "3.14159"]
        {
            let got = decode_numeric(&enc(s)).unwrap();
            let want = s.trim_start_matches('+');
            assert_eq!(got, want, "{s}");
        }
    }

    #[test]
    fn numeric_rejects_garbage() {
        let mut b = BytesMut::new();
        assert!(encode_numeric("12a", &mut b).is_err());
        assert!(encode_numeric("", &mut b).is_err());
    }

    #[test]
    fn corrupt_binary_numerics_are_errors_not_endless_strings() {
        // A display scale of 0xFFFF (read as -1) made the decoder append digits without end.
        assert!(decode_numeric(&[0, 0, 0, 0, 0, 0, 0xFF, 0xFF]).is_err());
        // A negative digit count made it reserve room for 2^64 digits.
        assert!(decode_numeric(&[0x80, 0, 0, 0, 0, 0, 0, 0]).is_err());
        // An unknown sign, and bytes beyond the digit count.
        assert!(decode_numeric(&[0, 1, 0, 0, 0x12, 0x34, 0, 0, 0, 1]).is_err());
        assert!(decode_numeric(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0]).is_err());
        assert_eq!(decode_numeric(&[0, 1, 0, 0, 0, 0, 0, 0, 0, 1]).unwrap(), "1");
    }

    #[test]
    fn numerics_beyond_postgres_limits_are_refused_and_those_within_round_trip() {
        let mut b = BytesMut::new();
        // 40000 digits after the point overflowed the i16 scale into a negative one.
        assert!(encode_numeric(&format!("0.{}", "1".repeat(40_000)), &mut b).is_err());
        assert!(encode_numeric(&format!("0.{}", "1".repeat(16_384)), &mut b).is_err());
        assert!(encode_numeric(&"9".repeat(4 * 32_767 + 1), &mut b).is_err());
        for s in [format!("1.{}", "5".repeat(16_383)), "9".repeat(4 * 32_767)] {
            assert_eq!(decode_numeric(&enc(&s)).unwrap(), s);
        }
    }

    #[test]
    fn params_must_be_an_array() {
        assert!(parse_params(Some("{}")).is_err());
        assert!(parse_params(Some("[1,")).is_err());
        assert_eq!(parse_params(None).unwrap().len(), 0);
        assert_eq!(parse_params(Some("[1,\"a\",null]")).unwrap().len(), 3);
    }
}
