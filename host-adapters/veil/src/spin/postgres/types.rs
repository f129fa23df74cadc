//! Conversions between `spin:postgres@4.0.0` values and PostgreSQL's binary wire format.
//!
//! Parameters are converted for the type the server inferred for each placeholder (so an
//! `int64` binds to an `int4` column after a range check, a string to `uuid` or `numeric`), and
//! encoded up front: a value that does not fit is a `bad-parameter` error, never a panic.
//! Results are decoded per column type; a type with no `db-value` comes back as
//! `unsupported(raw bytes)`. `timestamp` and `timestamptz` both come back as `datetime` in UTC,
//! as Spin does (the server sends `timestamptz` as a UTC instant).

use std::error::Error as StdError;

use bytes::BytesMut;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike, Utc};
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, Kind, ToSql, Type};

use crate::spin::bindings::spin::postgres::postgres::{DbDataType, DbValue, Interval, ParameterValue};

type BoxError = Box<dyn StdError + Sync + Send>;

/// A parameter already encoded in binary format for its placeholder's type (`None`: NULL).
#[derive(Debug)]
pub struct Encoded(Option<Vec<u8>>);

impl ToSql for Encoded {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match &self.0 {
            None => Ok(IsNull::Yes),
            Some(bytes) => {
                out.extend_from_slice(bytes);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A column value as the server sent it, whatever its type.
pub struct RawValue<'a>(pub Option<&'a [u8]>);

impl<'a> FromSql<'a> for RawValue<'a> {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(RawValue(Some(raw)))
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, BoxError> {
        Ok(RawValue(None))
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

fn kind_name(v: &ParameterValue) -> &'static str {
    match v {
        ParameterValue::Boolean(_) => "boolean",
        ParameterValue::Int8(_) => "int8",
        ParameterValue::Int16(_) => "int16",
        ParameterValue::Int32(_) => "int32",
        ParameterValue::Int64(_) => "int64",
        ParameterValue::Floating32(_) => "floating32",
        ParameterValue::Floating64(_) => "floating64",
        ParameterValue::Str(_) => "str",
        ParameterValue::Binary(_) => "binary",
        ParameterValue::Date(_) => "date",
        ParameterValue::Time(_) => "time",
        ParameterValue::Datetime(_) => "datetime",
        ParameterValue::Timestamp(_) => "timestamp",
        ParameterValue::Uuid(_) => "uuid",
        ParameterValue::Jsonb(_) => "jsonb",
        ParameterValue::Decimal(_) => "decimal",
        ParameterValue::RangeInt32(_) => "range-int32",
        ParameterValue::RangeInt64(_) => "range-int64",
        ParameterValue::RangeDecimal(_) => "range-decimal",
        ParameterValue::ArrayInt32(_) => "array-int32",
        ParameterValue::ArrayInt64(_) => "array-int64",
        ParameterValue::ArrayDecimal(_) => "array-decimal",
        ParameterValue::ArrayStr(_) => "array-str",
        ParameterValue::Interval(_) => "interval",
        ParameterValue::DbNull => "db-null",
    }
}

/// Encodes `v` with the library's own `ToSql` for `ty`.
fn enc<T: ToSql>(v: T, ty: &Type) -> Result<Option<Vec<u8>>, String> {
    let mut buf = BytesMut::new();
    match v.to_sql_checked(ty, &mut buf) {
        Ok(IsNull::No) => Ok(Some(buf.to_vec())),
        Ok(IsNull::Yes) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn date(&(y, m, d): &(i32, u8, u8)) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into()).ok_or_else(|| format!("{y}-{m}-{d} is not a valid date"))
}

fn time(&(h, m, s, ns): &(u8, u8, u8, u32)) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(h.into(), m.into(), s.into(), ns)
        .ok_or_else(|| format!("{h}:{m}:{s}.{ns:09} is not a valid time"))
}

fn datetime(&(y, mo, d, h, mi, s, ns): &WitDatetime) -> Result<NaiveDateTime, String> {
    Ok(date(&(y, mo, d))?.and_time(time(&(h, mi, s, ns))?))
}

fn unix_seconds(s: i64) -> Result<DateTime<Utc>, String> {
    DateTime::<Utc>::from_timestamp(s, 0).ok_or_else(|| format!("{s} is out of range for a timestamp"))
}

fn int(v: i64, ty: &Type) -> Result<Option<Vec<u8>>, String> {
    let range = |_| format!("{v} is out of range for type {ty}");
    match *ty {
        Type::INT2 => enc(i16::try_from(v).map_err(range)?, ty),
        Type::INT4 => enc(i32::try_from(v).map_err(range)?, ty),
        Type::INT8 => enc(v, ty),
        Type::NUMERIC => numeric_from_str(&v.to_string()).map(Some),
        _ => Err(String::new()),
    }
}

fn text_like(ty: &Type) -> bool {
    <&str as ToSql>::accepts(ty) || matches!(ty.kind(), Kind::Enum(_))
}

/// Converts parameter `$n` for the type `ty` the server inferred for it.
pub fn encode_param(n: usize, v: &ParameterValue, ty: &Type) -> Result<Encoded, String> {
    if let Kind::Domain(base) = ty.kind() {
        return encode_param(n, v, base);
    }
    let encoded = match (v, ty) {
        (ParameterValue::DbNull, _) => Ok(None),
        (ParameterValue::Boolean(b), &Type::BOOL) => enc(*b, ty),
        (ParameterValue::Int8(i), _) => int((*i).into(), ty),
        (ParameterValue::Int16(i), _) => int((*i).into(), ty),
        (ParameterValue::Int32(i), _) => int((*i).into(), ty),
        (ParameterValue::Int64(i), _) => int(*i, ty),
        (ParameterValue::Floating32(f), &Type::FLOAT4) => enc(*f, ty),
        (ParameterValue::Floating32(f), &Type::FLOAT8) => enc(f64::from(*f), ty),
        (ParameterValue::Floating64(f), &Type::FLOAT8) => enc(*f, ty),
        #[allow(clippy::cast_possible_truncation, reason = "only when the value survives the round trip")]
        (ParameterValue::Floating64(f), &Type::FLOAT4) => {
            let narrow = *f as f32;
            if f64::from(narrow) == *f || f.is_nan() {
                enc(narrow, ty)
            } else {
                Err(format!("{f} does not fit type float4 exactly"))
            }
        }
        (ParameterValue::Str(s), &Type::JSON) => Ok(Some(s.as_bytes().to_vec())),
        (ParameterValue::Str(s), &Type::JSONB) => Ok(Some(jsonb_bytes(s.as_bytes()))),
        (ParameterValue::Str(s), &Type::UUID) => {
            let id = uuid::Uuid::parse_str(s).map_err(|e| format!("not a UUID: {e}"))?;
            enc(id, ty)
        }
        (ParameterValue::Str(s), &Type::NUMERIC) | (ParameterValue::Decimal(s), &Type::NUMERIC) => {
            numeric_from_str(s).map(Some)
        }
        (ParameterValue::Str(s), _) if text_like(ty) => Ok(Some(s.as_bytes().to_vec())),
        (ParameterValue::Binary(b), &Type::BYTEA) => Ok(Some(b.clone())),
        (ParameterValue::Date(d), &Type::DATE) => enc(date(d)?, ty),
        (ParameterValue::Time(t), &Type::TIME) => enc(time(t)?, ty),
        (ParameterValue::Datetime(dt), &Type::TIMESTAMP) => enc(datetime(dt)?, ty),
        (ParameterValue::Datetime(dt), &Type::TIMESTAMPTZ) => enc(datetime(dt)?.and_utc(), ty),
        (ParameterValue::Timestamp(s), &Type::TIMESTAMPTZ) => enc(unix_seconds(*s)?, ty),
        (ParameterValue::Timestamp(s), &Type::TIMESTAMP) => enc(unix_seconds(*s)?.naive_utc(), ty),
        (ParameterValue::Uuid(s), &Type::UUID) => {
            let id = uuid::Uuid::parse_str(s).map_err(|e| format!("not a UUID: {e}"))?;
            enc(id, ty)
        }
        (ParameterValue::Uuid(s), _) if text_like(ty) => Ok(Some(s.as_bytes().to_vec())),
        (ParameterValue::Jsonb(b), &Type::JSONB) => Ok(Some(jsonb_bytes(b))),
        (ParameterValue::Jsonb(b), &Type::JSON) => Ok(Some(b.clone())),
        (ParameterValue::ArrayInt32(a), &Type::INT4_ARRAY) => enc(a, ty),
        (ParameterValue::ArrayInt32(a), &Type::INT8_ARRAY) => {
            enc(a.iter().map(|v| v.map(i64::from)).collect::<Vec<_>>(), ty)
        }
        (ParameterValue::ArrayInt64(a), &Type::INT8_ARRAY) => enc(a, ty),
        (ParameterValue::ArrayInt64(a), &Type::INT4_ARRAY) => {
            let narrowed = a
                .iter()
                .map(|v| v.map(i32::try_from).transpose())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| "an element is out of range for type int4".to_string())?;
            enc(narrowed, ty)
        }
        (ParameterValue::ArrayStr(a), &Type::TEXT_ARRAY | &Type::VARCHAR_ARRAY | &Type::BPCHAR_ARRAY) => {
            enc(a, ty)
        }
        (ParameterValue::Interval(i), &Type::INTERVAL) => Ok(Some(interval_bytes(i))),
        _ => Err(String::new()),
    };
    encoded.map(Encoded).map_err(|why| {
        if why.is_empty() {
            format!("parameter ${n}: a {} value cannot be bound to type {ty}", kind_name(v))
        } else {
            format!("parameter ${n} ({ty}): {why}")
        }
    })
}

fn jsonb_bytes(json: &[u8]) -> Vec<u8> {
    // jsonb's binary format is a version byte (1) and the JSON text.
    let mut out = Vec::with_capacity(json.len() + 1);
    out.push(1);
    out.extend_from_slice(json);
    out
}

fn interval_bytes(i: &Interval) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&i.micros.to_be_bytes());
    out.extend_from_slice(&i.days.to_be_bytes());
    out.extend_from_slice(&i.months.to_be_bytes());
    out
}

fn interval_from(raw: &[u8]) -> Result<Interval, String> {
    let bad = || "malformed interval".to_string();
    let micros = raw.get(0..8).and_then(|b| b.try_into().ok()).map(i64::from_be_bytes).ok_or_else(bad)?;
    let days = raw.get(8..12).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes).ok_or_else(bad)?;
    let months = raw.get(12..16).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes).ok_or_else(bad)?;
    if raw.len() != 16 {
        return Err(bad());
    }
    Ok(Interval { micros, days, months })
}

const NUMERIC_POS: u16 = 0x0000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_NAN: u16 = 0xC000;
const NUMERIC_PINF: u16 = 0xD000;
const NUMERIC_NINF: u16 = 0xF000;

/// Encodes a base-10 string (`-12.340`, `NaN`, `Infinity`) as a binary `numeric`:
/// ndigits, weight, sign, dscale, then base-10000 digits, all big-endian 16-bit.
pub fn numeric_from_str(text: &str) -> Result<Vec<u8>, String> {
    let bad = || format!("`{text}` is not a decimal number");
    let s = text.trim();
    let header = |ndigits: u16, weight: i16, sign: u16, dscale: u16| {
        let mut out = Vec::new();
        out.extend_from_slice(&ndigits.to_be_bytes());
        out.extend_from_slice(&weight.to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        out
    };
    match s.to_ascii_lowercase().as_str() {
        "nan" => return Ok(header(0, 0, NUMERIC_NAN, 0)),
        "infinity" | "+infinity" | "inf" | "+inf" => return Ok(header(0, 0, NUMERIC_PINF, 0)),
        "-infinity" | "-inf" => return Ok(header(0, 0, NUMERIC_NINF, 0)),
        _ => {}
    }
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let dscale = u16::try_from(frac_part.len()).ok().filter(|d| *d <= 0x3FFF).ok_or_else(bad)?;
    let int_part = int_part.trim_start_matches('0');
    // Pad to whole base-10000 groups: the integer part on the left, the fraction on the right.
    let int_pad = (4 - int_part.len() % 4) % 4;
    let frac_pad = (4 - frac_part.len() % 4) % 4;
    let digits: String = "0".repeat(int_pad) + int_part + frac_part + &"0".repeat(frac_pad);
    let mut groups: Vec<i16> = digits
        .as_bytes()
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(d - b'0')))
        .collect();
    let int_groups = (int_part.len() + int_pad) / 4;
    let mut weight = i64::try_from(int_groups).map_err(|_| bad())? - 1;
    let leading = groups.iter().take_while(|g| **g == 0).count();
    groups.drain(..leading);
    weight -= i64::try_from(leading).map_err(|_| bad())?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        return Ok(header(0, 0, NUMERIC_POS, dscale));
    }
    let ndigits = u16::try_from(groups.len()).ok().filter(|n| *n <= 0x7FFF).ok_or_else(bad)?;
    let weight = i16::try_from(weight).map_err(|_| bad())?;
    let mut out = header(ndigits, weight, if negative { NUMERIC_NEG } else { NUMERIC_POS }, dscale);
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Ok(out)
}

/// Decodes a binary `numeric` into its base-10 text, with exactly `dscale` fraction digits.
pub fn numeric_to_string(raw: &[u8]) -> Result<String, String> {
    let bad = || "malformed numeric".to_string();
    let word = |i: usize| raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(bad);
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        NUMERIC_NAN => return Ok("NaN".into()),
        NUMERIC_PINF => return Ok("Infinity".into()),
        NUMERIC_NINF => return Ok("-Infinity".into()),
        NUMERIC_POS | NUMERIC_NEG => {}
        _ => return Err(bad()),
    }
    if raw.len() != 8 + 2 * ndigits {
        return Err(bad());
    }
    let digits = (0..ndigits).map(|i| word(4 + i)).collect::<Result<Vec<u16>, _>>()?;
    let digit = |pos: i64| usize::try_from(pos).ok().and_then(|p| digits.get(p)).copied().unwrap_or(0);
    let mut out = String::new();
    if sign == NUMERIC_NEG {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for pos in 1..=weight {
            out.push_str(&format!("{:04}", digit(pos)));
        }
    }
    if dscale > 0 {
        let mut frac = String::new();
        let mut pos = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(pos)));
            pos += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// The `db-data-type` of a column type.
pub fn data_type(ty: &Type) -> DbDataType {
    match *ty {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::UUID => DbDataType::Uuid,
        Type::JSON | Type::JSONB => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        _ if <&str as FromSql>::accepts(ty) => DbDataType::Str,
        _ => match ty.kind() {
            Kind::Domain(base) => data_type(base),
            _ => DbDataType::Other(ty.name().to_string()),
        },
    }
}

fn from<'a, T: FromSql<'a>>(ty: &Type, raw: &'a [u8]) -> Result<T, String> {
    T::from_sql(ty, raw).map_err(|e| format!("cannot decode a {ty} value: {e}"))
}

fn wit_date(d: NaiveDate) -> Result<(i32, u8, u8), String> {
    let small = |v: u32| u8::try_from(v).map_err(|e| e.to_string());
    Ok((d.year(), small(d.month())?, small(d.day())?))
}

fn wit_time(t: NaiveTime) -> Result<(u8, u8, u8, u32), String> {
    let small = |v: u32| u8::try_from(v).map_err(|e| e.to_string());
    Ok((small(t.hour())?, small(t.minute())?, small(t.second())?, t.nanosecond()))
}

/// The WIT `datetime` tuple: year, month, day, hour, minute, second, nanosecond.
type WitDatetime = (i32, u8, u8, u8, u8, u8, u32);

fn wit_datetime(dt: NaiveDateTime) -> Result<WitDatetime, String> {
    let (y, mo, d) = wit_date(dt.date())?;
    let (h, mi, s, ns) = wit_time(dt.time())?;
    Ok((y, mo, d, h, mi, s, ns))
}

/// Decodes one column value (`None`: SQL NULL).
pub fn decode_value(ty: &Type, raw: Option<&[u8]>) -> Result<DbValue, String> {
    let Some(raw) = raw else {
        return Ok(DbValue::DbNull);
    };
    Ok(match *ty {
        Type::BOOL => DbValue::Boolean(from(ty, raw)?),
        Type::INT2 => DbValue::Int16(from(ty, raw)?),
        Type::INT4 => DbValue::Int32(from(ty, raw)?),
        Type::INT8 => DbValue::Int64(from(ty, raw)?),
        Type::FLOAT4 => DbValue::Floating32(from(ty, raw)?),
        Type::FLOAT8 => DbValue::Floating64(from(ty, raw)?),
        Type::BYTEA => DbValue::Binary(raw.to_vec()),
        Type::DATE => DbValue::Date(wit_date(from(ty, raw)?)?),
        Type::TIME => DbValue::Time(wit_time(from(ty, raw)?)?),
        Type::TIMESTAMP => DbValue::Datetime(wit_datetime(from(ty, raw)?)?),
        Type::TIMESTAMPTZ => DbValue::Datetime(wit_datetime(from::<DateTime<Utc>>(ty, raw)?.naive_utc())?),
        Type::UUID => DbValue::Uuid(from::<uuid::Uuid>(ty, raw)?.to_string()),
        Type::JSON => DbValue::Jsonb(raw.to_vec()),
        Type::JSONB => match raw.split_first() {
            Some((1, json)) => DbValue::Jsonb(json.to_vec()),
            _ => return Err("unknown jsonb format version".to_string()),
        },
        Type::NUMERIC => DbValue::Decimal(numeric_to_string(raw)?),
        Type::INT4_ARRAY => DbValue::ArrayInt32(from(ty, raw)?),
        Type::INT8_ARRAY => DbValue::ArrayInt64(from(ty, raw)?),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbValue::ArrayStr(from(ty, raw)?),
        Type::INTERVAL => DbValue::Interval(interval_from(raw)?),
        Type::VOID => DbValue::DbNull,
        _ if <&str as FromSql>::accepts(ty) => DbValue::Str(from::<String>(ty, raw)?),
        _ => match ty.kind() {
            Kind::Domain(base) => return decode_value(base, Some(raw)),
            Kind::Enum(_) => DbValue::Str(String::from_utf8(raw.to_vec()).map_err(|e| e.to_string())?),
            _ => DbValue::Unsupported(raw.to_vec()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(e: Encoded) -> Option<Vec<u8>> {
        e.0
    }

    #[test]
    fn integers_convert_to_the_inferred_type_with_range_checks() {
        let p = |v: ParameterValue, ty: &Type| encode_param(1, &v, ty).map(bytes);
        assert_eq!(p(ParameterValue::Int64(7), &Type::INT4).unwrap(), Some(vec![0, 0, 0, 7]));
        assert_eq!(p(ParameterValue::Int32(-1), &Type::INT8).unwrap(), Some(vec![0xff; 8]));
        assert_eq!(p(ParameterValue::Int8(3), &Type::INT2).unwrap(), Some(vec![0, 3]));
        let err = p(ParameterValue::Int64(1 << 40), &Type::INT4).unwrap_err();
        assert!(err.contains("out of range for type int4"), "{err}");
        assert!(p(ParameterValue::Int64(70_000), &Type::INT2).is_err());
        let err = p(ParameterValue::Int64(1), &Type::TEXT).unwrap_err();
        assert_eq!(err, "parameter $1: a int64 value cannot be bound to type text");
        assert_eq!(
            p(ParameterValue::Int64(12345), &Type::NUMERIC).unwrap(),
            Some(numeric_from_str("12345").unwrap())
        );
    }

    #[test]
    fn other_parameters() {
        let p = |v: ParameterValue, ty: &Type| encode_param(2, &v, ty).map(bytes);
        assert_eq!(p(ParameterValue::DbNull, &Type::UUID).unwrap(), None);
        assert_eq!(p(ParameterValue::Boolean(true), &Type::BOOL).unwrap(), Some(vec![1]));
        assert!(p(ParameterValue::Boolean(true), &Type::INT4).is_err());
        assert_eq!(
            p(ParameterValue::Str("é".into()), &Type::VARCHAR).unwrap(),
            Some("é".as_bytes().to_vec())
        );
        assert_eq!(p(ParameterValue::Str("{}".into()), &Type::JSONB).unwrap(), Some(vec![1, b'{', b'}']));
        assert_eq!(p(ParameterValue::Jsonb(b"[]".to_vec()), &Type::JSON).unwrap(), Some(b"[]".to_vec()));
        assert!(p(ParameterValue::Str("x".into()), &Type::BYTEA).is_err());
        assert_eq!(p(ParameterValue::Binary(vec![0, 1]), &Type::BYTEA).unwrap(), Some(vec![0, 1]));
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(p(ParameterValue::Uuid(id.into()), &Type::UUID).unwrap().unwrap().len(), 16);
        assert!(p(ParameterValue::Uuid("nope".into()), &Type::UUID).unwrap_err().contains("not a UUID"));
        assert!(p(ParameterValue::Date((2024, 2, 30)), &Type::DATE)
            .unwrap_err()
            .contains("not a valid date"));
        assert!(p(ParameterValue::Time((24, 0, 0, 0)), &Type::TIME).is_err());
        assert!(p(ParameterValue::Timestamp(i64::MAX), &Type::TIMESTAMPTZ).is_err());
        assert!(p(ParameterValue::Timestamp(0), &Type::TIMESTAMP).is_ok());
        assert!(p(ParameterValue::Floating64(0.1), &Type::FLOAT4).is_err());
        assert!(p(ParameterValue::Floating64(0.5), &Type::FLOAT4).is_ok());
        assert!(p(ParameterValue::Decimal("1e5".into()), &Type::NUMERIC).is_err());
        assert!(p(ParameterValue::RangeInt32((None, None)), &Type::INT4_RANGE).is_err());
        assert!(p(ParameterValue::ArrayInt64(vec![Some(1 << 40)]), &Type::INT4_ARRAY).is_err());
        assert!(p(ParameterValue::ArrayInt64(vec![Some(1), None]), &Type::INT4_ARRAY).is_ok());
    }

    #[test]
    fn numerics_round_trip() {
        for (text, expected) in [
            ("0", "0"),
            ("-0", "0"),
            ("000123", "123"),
            ("12345678", "12345678"),
            ("-12.340", "-12.340"),
            ("0.0001", "0.0001"),
            ("0.00001", "0.00001"),
            (".5", "0.5"),
            ("10000", "10000"),
            ("100000000.000000001", "100000000.000000001"),
            ("+7.", "7"),
            ("NaN", "NaN"),
            ("-Infinity", "-Infinity"),
        ] {
            let raw = numeric_from_str(text).unwrap();
            assert_eq!(numeric_to_string(&raw).unwrap(), expected, "{text}");
        }
        // 1234.5678 is ndigits 2, weight 0, positive, dscale 4, digits 1234 5678.
        assert_eq!(
            numeric_from_str("1234.5678").unwrap(),
            vec![0, 2, 0, 0, 0, 0, 0, 4, 0x04, 0xD2, 0x16, 0x2E]
        );
        for bad in ["", "-", ".", "1e5", "1.2.3", "abc", " 1 2"] {
            assert!(numeric_from_str(bad).is_err(), "{bad}");
        }
        assert!(numeric_to_string(&[0, 1, 0, 0]).is_err());
    }

    #[test]
    fn results_decode_by_column_type() {
        assert!(matches!(decode_value(&Type::INT4, None), Ok(DbValue::DbNull)));
        assert!(matches!(decode_value(&Type::INT4, Some(&[0, 0, 0, 9])), Ok(DbValue::Int32(9))));
        assert!(decode_value(&Type::INT4, Some(&[0, 9])).is_err());
        assert!(matches!(decode_value(&Type::NAME, Some(b"pg")), Ok(DbValue::Str(s)) if s == "pg"));
        assert!(matches!(decode_value(&Type::JSONB, Some(&[1, b'1'])), Ok(DbValue::Jsonb(b)) if b == b"1"));
        assert!(matches!(decode_value(&Type::VOID, Some(&[])), Ok(DbValue::DbNull)));
        assert!(
            matches!(decode_value(&Type::INET, Some(&[1, 2])), Ok(DbValue::Unsupported(b)) if b == [1, 2])
        );
        // 2000-01-01 00:00:01 UTC is 1_000_000 µs after the PostgreSQL epoch.
        let ts = 1_000_000i64.to_be_bytes();
        assert!(matches!(
            decode_value(&Type::TIMESTAMPTZ, Some(&ts)),
            Ok(DbValue::Datetime((2000, 1, 1, 0, 0, 1, 0)))
        ));
        // Infinity does not fit a datetime: a conversion error, not a panic.
        assert!(decode_value(&Type::TIMESTAMP, Some(&i64::MAX.to_be_bytes())).is_err());
        let iv = Interval { micros: -5, days: 3, months: 14 };
        match decode_value(&Type::INTERVAL, Some(&interval_bytes(&iv))) {
            Ok(DbValue::Interval(Interval { micros: -5, days: 3, months: 14 })) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(data_type(&Type::TIMESTAMPTZ), DbDataType::Datetime));
        assert!(matches!(data_type(&Type::JSON), DbDataType::Jsonb));
        assert!(matches!(data_type(&Type::INET), DbDataType::Other(n) if n == "inet"));
    }
}
