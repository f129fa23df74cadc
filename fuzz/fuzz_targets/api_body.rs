//! The JSON body of every route that reads one (`api::fuzzing::parse_body`, the handlers' own
//! parsing): the first byte picks the route, the rest is the body. Never panics; a refusal is
//! 400 `invalid_json`, 400 `invalid_request` or 422 `invalid_field` and never echoes a string of
//! the body; what is accepted is what the body said (values decoded exactly, base64 canonical,
//! row numbers and job numbers as sent), and only the routes whose body is optional accept an
//! empty one.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use veil::api::fuzzing::{parse_body, BodyRoute, Parsed};
use veil_fuzz::assert_no_echo;

/// Where the API's fixed words are: the OpenAPI document, the sources that write messages.
const API_VOCABULARY: &[&str] = &[
    veil::api::OPENAPI,
    SCHEMA_WORDS,
    include_str!("../../src/api/mod.rs"),
    include_str!("../../src/api/schemes.rs"),
    include_str!("../../src/api/data.rs"),
    include_str!("../../src/api/subjects.rs"),
    include_str!("../../src/api/jobs.rs"),
    include_str!("../../src/api/snowflake.rs"),
    include_str!("../../src/api/bigquery.rs"),
    include_str!("../../src/api/rows.rs"),
    include_str!("../../src/api/keys.rs"),
    include_str!("../../src/api/transit.rs"),
    include_str!("../../src/ops/error.rs"),
    include_str!("../../src/scheme/mod.rs"),
    include_str!("../../src/scheme/mask.rs"),
    include_str!("../../src/ids.rs"),
];

/// Words an error message may share with a body because the schema itself has them (field and
/// variant names, type names serde reports as "expected ..."), on top of the OpenAPI document.
const SCHEMA_WORDS: &str = "struct ProtectBody struct UnprotectBody struct MaskBody \
    struct CreateSchemeBody struct Policy struct RewrapBody struct ConfirmBody struct BulkEraseBody \
    struct CreateBody struct EmptyBody struct Body struct Context a tuple of size 1 a tuple of size 2 \
    i64 u64 f64 a number a JSON number MaskRuleWire internally tagged enum MaskRuleWire \
    variant identifier field identifier a sequence a string a character u32 integer \
    one of unknown field unknown variant missing field duplicate field invalid type \
    invalid value invalid length expected fewer elements in array expected more elements";

/// The strings of a JSON document (keys and values), long enough to count as an echo.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                strings(v, out);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let route = BodyRoute::ALL[usize::from(selector) % BodyRoute::ALL.len()];
    let json: Option<Value> = serde_json::from_slice(body).ok();
    match parse_body(route, body) {
        Err(e) => {
            let expected = [(400, "invalid_json"), (400, "invalid_request"), (422, "invalid_field")];
            // Transit's refusals of options Veil never offers (docs/transit.md), all 400
            let transit = [
                "unsupported_key_type",
                "convergent_encryption_not_supported",
                "export_not_supported",
                "deletion_not_allowed",
            ];
            let transit_route = route.name().starts_with("POST /v1/transit/");
            assert!(
                expected.contains(&(e.status, e.code)) || (transit_route && e.status == 400 && transit.contains(&e.code)),
                "{}: {} {}",
                route.name(),
                e.status,
                e.code
            );
            if e.code == "invalid_json" {
                assert!(json.is_none(), "{}: valid JSON refused as invalid_json", route.name());
            }
            let mut found = Vec::new();
            if let Some(v) = &json {
                strings(v, &mut found);
            }
            let inputs: Vec<Vec<u8>> =
                found.into_iter().filter(|s| s.len() >= 8).map(String::into_bytes).collect();
            assert_no_echo(route.name(), &e.message, &inputs, API_VOCABULARY);
        }
        Ok(parsed) => {
            let Some(v) = json else {
                // only rekey, the erasures and a job's step or cancel accept a body that is not
                // JSON: an empty one (no new KEK, no confirm, no fields)
                let empty_ok = [BodyRoute::Rekey, BodyRoute::EraseScheme, BodyRoute::EraseTenant, BodyRoute::JobStep, BodyRoute::JobCancel];
                // Transit reads an empty body as `{}` (the `bao write -f` of a rotate or a random)
                let transit = route.name().starts_with("POST /v1/transit/");
                assert!(empty_ok.contains(&route) || transit, "{}: accepted a body that is not JSON", route.name());
                assert!(body.iter().all(u8::is_ascii_whitespace), "{}: accepted a body that is not JSON", route.name());
                match parsed {
                    Parsed::Rekey(None) | Parsed::Confirm(None) | Parsed::NoFields | Parsed::Transit(1) => {}
                    _ => panic!("{}: an empty body parsed to something", route.name()),
                }
                return;
            };
            let given = |field: &str| -> Vec<&str> {
                v[field].as_array().expect("values").iter().map(|s| s.as_str().expect("string")).collect()
            };
            match parsed {
                Parsed::Scheme(s) => assert_eq!(Some(s.name.as_str()), v["name"].as_str()),
                Parsed::Transit(n) => {
                    let items = [
                        BodyRoute::TransitEncrypt,
                        BodyRoute::TransitDecrypt,
                        BodyRoute::TransitRewrap,
                        BodyRoute::TransitHmac,
                        BodyRoute::TransitVerify,
                    ];
                    let batch = v["batch_input"].as_array().map_or(1, Vec::len);
                    assert_eq!(n, if items.contains(&route) { batch } else { 1 }, "{}: items", route.name());
                }
                Parsed::Protect { scheme, values, subject, context } => {
                    assert_eq!(Some(scheme.as_str()), v["scheme"].as_str());
                    assert_eq!(subject.as_deref(), v["subject"].as_str());
                    assert_eq!(context.as_deref(), v["context"].as_str());
                    let base64 = v["encoding"].as_str() == Some("base64");
                    let given = given("values");
                    assert_eq!(values.len(), given.len());
                    for (value, text) in values.iter().zip(given) {
                        match value {
                            Ok(bytes) if base64 => {
                                let again = base64::engine::general_purpose::STANDARD.encode(bytes);
                                assert_eq!(again, text, "base64 accepted in a second spelling");
                            }
                            Ok(bytes) => assert_eq!(bytes.as_slice(), text.as_bytes()),
                            Err(code) => assert!(base64 && *code == "invalid_encoding", "{code}"),
                        }
                    }
                }
                Parsed::Unprotect { scheme, values, subject, context, base64 } => {
                    assert_eq!(scheme.as_deref(), v["scheme"].as_str());
                    assert_eq!(values, given("values"));
                    assert_eq!(subject.as_deref(), v["subject"].as_str());
                    assert_eq!(context.as_deref(), v["context"].as_str());
                    assert_eq!(base64, v["encoding"].as_str() == Some("base64"));
                }
                Parsed::Mask { scheme, values } => {
                    assert_eq!(Some(scheme.as_str()), v["scheme"].as_str());
                    assert_eq!(values, given("values"));
                }
                Parsed::Rewrap { scheme, values, subject, context } => {
                    assert_eq!(scheme.as_deref(), v["scheme"].as_str());
                    assert_eq!(values, given("values"));
                    assert_eq!(subject.as_deref(), v["subject"].as_str());
                    assert_eq!(context.as_deref(), v["context"].as_str());
                }
                Parsed::Confirm(confirm) => assert_eq!(confirm.as_deref(), v["confirm"].as_str()),
                Parsed::EraseSubjects(subjects) => assert_eq!(subjects, given("subjects")),
                Parsed::Job(j) => {
                    for (field, got) in [
                        ("scheme", Some(&j.scheme)),
                        ("database", Some(&j.database)),
                        ("table", Some(&j.table)),
                        ("key_column", Some(&j.key_column)),
                        ("token_column", Some(&j.token_column)),
                        ("subject_column", j.subject_column.as_ref()),
                        ("context", j.context.as_ref()),
                    ] {
                        assert_eq!(got.map(String::as_str), v[field].as_str(), "POST /v1/jobs: {field}");
                    }
                    for (field, got) in [("batch_size", j.batch_size), ("target_version", j.target_version)] {
                        // a whole number, also spelled with a zero fraction; nothing else
                        let sent = v[field].as_i64().or_else(|| v[field].as_f64().map(|f| f as i64));
                        assert_eq!(got, sent, "POST /v1/jobs: {field}");
                        if let Some(f) = v[field].as_f64() {
                            assert_eq!(f.fract(), 0.0, "POST /v1/jobs: {field} with a fraction");
                        }
                    }
                }
                Parsed::NoFields => assert_eq!(v.as_object().map(|o| o.len()), Some(0)),
                Parsed::Snowflake(rows) => {
                    let sent = v["data"].as_array().expect("data");
                    assert_eq!(rows.len(), sent.len());
                    for ((number, value), row) in rows.iter().zip(sent) {
                        assert_eq!(Some(&Value::Number(number.clone())), row.get(0));
                        assert_eq!(value.as_deref(), row[1].as_str());
                        let n = number.as_f64().expect("a number");
                        assert!(n.fract() == 0.0 && (0.0..=4_294_967_295.0).contains(&n), "row number {n}");
                    }
                }
                Parsed::ApiKey { label, roles, expires_at } => {
                    assert_eq!(Some(label.as_str()), v["label"].as_str());
                    let mut sent = given("roles");
                    sent.sort();
                    assert_eq!(roles, sent);
                    assert_eq!(expires_at.is_some(), v["expires_at"].is_string());
                }
                Parsed::BigQuery { operation, scheme, fail, values } => {
                    let c = &v["userDefinedContext"];
                    assert_eq!(Some(operation), c["operation"].as_str());
                    assert_eq!(Some(scheme.as_str()), c["scheme"].as_str());
                    assert_eq!(fail, c["on_error"].as_str() == Some("fail"));
                    let sent = v["calls"].as_array().expect("calls");
                    assert_eq!(values.len(), sent.len());
                    for (value, call) in values.iter().zip(sent) {
                        assert_eq!(value.as_deref(), call[0].as_str());
                    }
                }
                Parsed::UpdateScheme | Parsed::Rekey(_) => {}
            }
        }
    }
});
