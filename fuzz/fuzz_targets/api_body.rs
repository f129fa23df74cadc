//! The JSON body of every route that reads one (`api::fuzzing::parse_body`, the handlers' own
//! parsing): the first byte picks the route, the rest is the body. Never panics; a refusal is
//! 400 `invalid_json`, 400 `invalid_request` or 422 `invalid_field` and never echoes a string of
//! the body; what is accepted is what the body said (values decoded exactly, base64 canonical).
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
    include_str!("../../src/scheme/mod.rs"),
    include_str!("../../src/scheme/mask.rs"),
    include_str!("../../src/ids.rs"),
];

/// Words an error message may share with a body because the schema itself has them (field and
/// variant names, type names serde reports as "expected ..."), on top of the OpenAPI document.
const SCHEMA_WORDS: &str = "struct ProtectBody struct UnprotectBody struct MaskBody \
    struct CreateSchemeBody struct Policy MaskRuleWire internally tagged enum MaskRuleWire \
    variant identifier field identifier a sequence a string a character u32 integer \
    one of unknown field unknown variant missing field duplicate field invalid type \
    invalid value invalid length expected";

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
            assert!(expected.contains(&(e.status, e.code)), "{}: {} {}", route.name(), e.status, e.code);
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
                // only rekey accepts a body that is not JSON: an empty one (no new KEK)
                assert!(route == BodyRoute::Rekey && body.iter().all(u8::is_ascii_whitespace));
                return;
            };
            let given = |field: &str| -> Vec<&str> {
                v[field].as_array().expect("values").iter().map(|s| s.as_str().expect("string")).collect()
            };
            match parsed {
                Parsed::Scheme(s) => assert_eq!(Some(s.name.as_str()), v["name"].as_str()),
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
                Parsed::Unprotect { values, subject, context, base64 } => {
                    assert_eq!(values, given("values"));
                    assert_eq!(subject.as_deref(), v["subject"].as_str());
                    assert_eq!(context.as_deref(), v["context"].as_str());
                    assert_eq!(base64, v["encoding"].as_str() == Some("base64"));
                }
                Parsed::Mask { scheme, values } => {
                    assert_eq!(Some(scheme.as_str()), v["scheme"].as_str());
                    assert_eq!(values, given("values"));
                }
                Parsed::Rewrap { values, subject, context } => {
                    assert_eq!(values, given("values"));
                    assert_eq!(subject.as_deref(), v["subject"].as_str());
                    assert_eq!(context.as_deref(), v["context"].as_str());
                }
                Parsed::UpdateScheme | Parsed::Rekey(_) => {}
            }
        }
    }
});
