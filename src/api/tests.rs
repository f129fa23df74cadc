//! The whole API in-process: real SQLite (rusqlite), the local KEK, HS256 dev tokens.

use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::auth::{AuthConfig, Authenticator, JwksFetcher};
use crate::config::{tests::MapVars, Config};
use crate::crypto::rng::Csprng;
use crate::store::tests::Lite;

const SECRET: &str = "0123456789abcdef0123456789abcdef-dev";

struct NoJwks;
impl JwksFetcher for NoJwks {
    fn fetch_jwks(&self, _: &str) -> Result<String, String> {
        Err("no JWKS in these tests".into())
    }
}

struct World {
    db: Lite,
    config: Config,
    auth: Authenticator,
    seed: u8,
    now: i64,
    /// The host key-value store the DEK cache uses when `dek_cache` is on, and the last
    /// request's vault unwraps.
    kv: crate::kv::mem::MemKv,
    unwraps: u32,
    /// Extra request headers (lowercase names) sent with every call.
    headers: Vec<(String, String)>,
}

fn world_with(vars: MapVars) -> World {
    let kek = base64::engine::general_purpose::STANDARD.encode([5u8; 32]);
    let vars = vars
        .with("jwt_audience", "")
        .with("jwt_issuer", "")
        .with("dev_mode", "true")
        .with("local_kek", &kek)
        .with("jwt_hs256_secret", SECRET);
    let vars = if vars.0.contains_key("no_audit_key") {
        vars
    } else {
        vars.with("audit_master_key", &base64::engine::general_purpose::STANDARD.encode([8u8; 32]))
    };
    let vars = if vars.0.contains_key("no_subject_keys") {
        vars
    } else {
        vars.with("subject_digest_key", &base64::engine::general_purpose::STANDARD.encode([6u8; 32]))
            .with("erasure_signing_key", &base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
            .with("erasure_signing_kid", "k1")
    };
    let mut config = Config::load(&vars).expect("config");
    let auth_cfg: AuthConfig = std::mem::take(&mut config.auth);
    let auth = Authenticator::new(auth_cfg).expect("auth");
    World {
        db: Lite::memory(),
        config,
        auth,
        seed: 0,
        now: 1_795_388_400,
        kv: Default::default(),
        unwraps: 0,
        headers: Vec::new(),
    }
}

fn world() -> World {
    world_with(MapVars::default())
}

fn token(tenant: &str, roles: &[&str]) -> String {
    let key = HS256Key::from_bytes(SECRET.as_bytes());
    let claims =
        Claims::with_custom_claims(json!({"tenant": tenant, "roles": roles}), Duration::from_mins(10))
            .with_subject("tester");
    format!("Bearer {}", key.authenticate(claims).expect("sign"))
}

impl World {
    fn call(&mut self, method: &str, path: &str, auth: Option<&str>, body: Value) -> (u16, Value) {
        let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
        self.raw(method, path, auth, &body)
    }

    fn raw(&mut self, method: &str, path: &str, auth: Option<&str>, body: &[u8]) -> (u16, Value) {
        self.seed = self.seed.wrapping_add(1);
        let mut ctx = Ctx::new(&self.config, &self.db, Csprng::from_seed([self.seed; 32]), self.now);
        if let Some(c) = &self.config.dek_cache {
            let kv = Box::new(self.kv.clone());
            ctx.dek_cache = Some(crate::kms::cache::DekCache::new(kv, &c.key, c.limits));
        }
        let req = {
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            ApiRequest {
                method,
                path,
                query,
                content_type: Some("application/json"),
                authorization: auth,
                headers: &self.headers,
                api_key: None,
                body,
            }
        };
        let r = handle(Deps { ctx: &mut ctx, auth: Ok(&self.auth), jwks: &NoJwks }, &req);
        self.unwraps = ctx.keks.stats().unwraps();
        let v: Value = serde_json::from_slice(&r.body).expect("every answer is JSON");
        if r.status >= 400 {
            assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{v}");
        }
        (r.status, v)
    }

    fn scheme(&mut self, tenant: &str, body: Value) -> (u16, Value) {
        self.call("POST", "/v1/schemes", Some(&token(tenant, &["admin"])), body)
    }
}

fn pii(extra: Value) -> Value {
    let mut b = json!({"name": "pii", "kek": {"provider": "local"},
        "policy": {"protect": ["app"], "unprotect": ["support"], "mask": ["analyst"]},
        "mask": {"rule": "keep_last", "n": 4, "char": "*"}});
    if let (Some(b), Some(e)) = (b.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    b
}

fn values(v: &Value) -> Vec<Value> {
    v["results"].as_array().expect("results").iter().map(|r| r["value"].clone()).collect()
}

#[test]
fn create_protect_unprotect_mask() {
    let mut w = world();
    let (s, v) = w.scheme("acme", pii(json!({})));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["current_version"], 1);
    assert_eq!(v["created_at"], "2026-11-22T23:00:00Z");

    let app = token("acme", &["app"]);
    let (s, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&app),
        json!({"scheme": "pii", "values": ["4111111111111111", "", "ünï"]}),
    );
    assert_eq!(s, 200, "{v}");
    let toks = values(&v);
    assert!(toks.iter().all(|t| t.as_str().is_some_and(|t| t.starts_with("veil.1.pii.1."))));

    let support = token("acme", &["support"]);
    let (s, v) = w.call("POST", "/v1/unprotect", Some(&support), json!({"values": toks}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(values(&v), vec![json!("4111111111111111"), json!(""), json!("ünï")]);

    let analyst = token("acme", &["analyst"]);
    let (s, v) =
        w.call("POST", "/v1/mask", Some(&analyst), json!({"scheme": "pii", "values": ["4111111111111111"]}));
    assert_eq!((s, values(&v)), (200, vec![json!("************1111")]));
}

#[test]
fn policy_denies_by_default() {
    let mut w = world();
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
    let app = token("acme", &["app"]);
    let (_, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["x"]}));
    let toks = values(&v);
    for (who, path, body) in [
        (&app, "/v1/unprotect", json!({"values": toks})),
        (&token("acme", &["support"]), "/v1/protect", json!({"scheme": "pii", "values": ["x"]})),
        (&app, "/v1/mask", json!({"scheme": "pii", "values": ["x"]})),
        (&app, "/v1/schemes", pii(json!({"name": "other"}))),
        (&app, "/v1/schemes/pii/rotate", Value::Null),
    ] {
        let (s, v) = w.call("POST", path, Some(who), body);
        assert_eq!((s, v["error"]["code"].as_str()), (403, Some("forbidden")), "{path}");
    }
}

#[test]
fn tokens_are_bound_to_tenant_subject_and_context() {
    let mut w = world();
    for t in ["acme", "evil"] {
        assert_eq!(w.scheme(t, pii(json!({"policy": {"protect": ["app"], "unprotect": ["app"]}}))).0, 201);
    }
    let app = token("acme", &["app"]);
    let (_, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&app),
        json!({"scheme": "pii", "values": ["secret"], "subject": "s1", "context": "c1"}),
    );
    let tok = values(&v)[0].clone();
    let ok = json!({"values": [tok], "subject": "s1", "context": "c1"});
    assert_eq!(values(&w.call("POST", "/v1/unprotect", Some(&app), ok.clone()).1), vec![json!("secret")]);
    let evil = token("evil", &["app"]);
    for (who, body) in [
        (&evil, ok.clone()),
        (&app, json!({"values": [tok], "subject": "s2", "context": "c1"})),
        (&app, json!({"values": [tok], "context": "c1"})),
        (&app, json!({"values": [tok], "subject": "s1"})),
    ] {
        let (s, v) = w.call("POST", "/v1/unprotect", Some(who), body);
        assert_eq!(s, 200);
        assert_eq!(v["results"][0]["error"]["code"], "decryption_failed", "{v}");
    }
}

#[test]
fn one_bad_item_leaves_the_rest() {
    let mut w = world_with(MapVars::default().with("max_value_bytes", "8"));
    w.scheme("acme", pii(json!({"policy": {"protect": ["app"], "unprotect": ["app"]}})));
    let app = token("acme", &["app"]);
    let (_, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&app),
        json!({"scheme": "pii", "values": ["a", "123456789", "b"]}),
    );
    assert_eq!(v["results"][1]["error"]["code"], "value_too_large");
    let a = values(&v)[0].as_str().expect("a").to_string();
    let b = values(&v)[2].as_str().expect("b").to_string();
    // flip one payload character to another base64url character
    let mut chars: Vec<char> = a.chars().collect();
    let last = chars.len() - 3;
    chars[last] = if chars[last] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    let (s, v) = w.call(
        "POST",
        "/v1/unprotect",
        Some(&app),
        json!({"values": [a, tampered, "garbage", &b[..b.len() - 4], b]}),
    );
    assert_eq!(s, 200);
    let codes: Vec<Value> =
        v["results"].as_array().expect("r").iter().map(|r| r["error"]["code"].clone()).collect();
    // "b" seals to 29 bytes; four characters fewer is below nonce + tag, so not a token at all
    assert_eq!(
        codes,
        vec![
            Value::Null,
            json!("decryption_failed"),
            json!("invalid_token"),
            json!("invalid_token"),
            Value::Null
        ]
    );
    assert_eq!(v["results"][0]["value"], "a");
    assert_eq!(v["results"][4]["value"], "b");
}

#[test]
fn rotation_keeps_old_tokens() {
    let mut w = world();
    w.scheme("acme", pii(json!({"policy": {"protect": ["app"], "unprotect": ["app"]}})));
    let app = token("acme", &["app"]);
    let old =
        values(&w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["v1"]})).1);
    let (s, v) = w.call("POST", "/v1/schemes/pii/rotate", Some(&token("acme", &["admin"])), Value::Null);
    assert_eq!((s, v["current_version"].clone()), (200, json!(2)));
    let (_, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["v2"]}));
    assert_eq!(v["key_version"], 2);
    let new = values(&v);
    assert!(new[0].as_str().is_some_and(|t| t.starts_with("veil.1.pii.2.")));
    let (_, v) = w.call("POST", "/v1/unprotect", Some(&app), json!({"values": [old[0], new[0]]}));
    assert_eq!(values(&v), vec![json!("v1"), json!("v2")]);
}

#[test]
fn bad_requests_get_stable_codes_and_write_nothing() {
    let mut w = world_with(MapVars::default().with("max_batch", "3"));
    let admin = token("acme", &["admin"]);
    // method, path, authorization, body, expected status, expected code
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("GET", "/nope", None, b"", 404, "not_found"),
        ("GET", "/v1/protect", Some(&admin), b"", 405, "method_not_allowed"),
        ("GET", "/v1/schemes", None, b"", 401, "unauthenticated"),
        ("GET", "/v1/schemes", Some("Bearer nope"), b"", 401, "invalid_credentials"),
        ("POST", "/v1/schemes", Some(&admin), b"{", 400, "invalid_json"),
        ("POST", "/v1/schemes", Some(&admin), b"\xff\xfe", 400, "invalid_json"),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": 5, "kek": {"provider": "local"}}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "x", "kek": {"provider": "local"}, "extra": 1}"#,
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "Bad.Name", "kek": {"provider": "local"}}"#,
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "x", "algorithm": "des", "kek": {"provider": "local"}}"#,
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "x", "kek": {"provider": "vault9"}}"#,
            422,
            "invalid_field",
        ),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "x", "kek": {"provider": "local"}, "mask": {"rule": "keep_last"}}"#,
            422,
            "invalid_field",
        ),
        ("GET", "/v1/schemes/x", Some(&admin), b"", 404, "scheme_not_found"),
        ("POST", "/v1/protect", Some(&admin), br#"{"scheme": "x", "values": "a"}"#, 400, "invalid_request"),
        ("POST", "/v1/protect", Some(&admin), br#"{"scheme": "x", "values": [1]}"#, 400, "invalid_request"),
        // a struct's fields as an array, which serde alone would read
        ("POST", "/v1/protect", Some(&admin), br#"["x", ["a"]]"#, 400, "invalid_request"),
        ("PATCH", "/v1/schemes/x", Some(&admin), b"[null, null]", 400, "invalid_request"),
        (
            "POST",
            "/v1/schemes",
            Some(&admin),
            br#"{"name": "x", "kek": {"provider": "local", "extra": 1}}"#,
            422,
            "invalid_field",
        ),
        ("POST", "/v1/rewrap", Some(&admin), br#"[["t"]]"#, 400, "invalid_request"),
        (
            "POST",
            "/v1/protect",
            Some(&admin),
            br#"{"scheme": "x", "values": ["a","b","c","d"]}"#,
            413,
            "batch_too_large",
        ),
        (
            "POST",
            "/v1/protect",
            Some(&admin),
            br#"{"scheme": "x", "values": ["a"]}"#,
            404,
            "scheme_not_found",
        ),
    ];
    for (method, path, auth, body, status, code) in cases {
        let (s, v) = w.raw(method, path, auth, body);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {}",
            String::from_utf8_lossy(body)
        );
    }
    // nothing was created by any of them
    let (_, v) = w.call("GET", "/v1/schemes", Some(&admin), Value::Null);
    assert_eq!(v, json!({"schemes": []}));
    // and a subject over the limit is refused before any work
    w.scheme("acme", pii(json!({})));
    let (s, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&token("acme", &["app"])),
        json!({"scheme": "pii", "values": ["a"], "subject": "s".repeat(257)}),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("invalid_field")));
}

#[test]
fn duplicate_scheme_is_409_and_base64_round_trips() {
    let mut w = world();
    assert_eq!(w.scheme("acme", pii(json!({"policy": {"protect": ["app"], "unprotect": ["app"]}}))).0, 201);
    let (s, v) = w.scheme("acme", pii(json!({})));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("scheme_exists")));
    let app = token("acme", &["app"]);
    let bin = base64::engine::general_purpose::STANDARD.encode([0xffu8, 0, 0xfe]);
    let (_, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&app),
        json!({"scheme": "pii", "values": [bin, "!!"], "encoding": "base64"}),
    );
    assert_eq!(v["results"][1]["error"]["code"], "invalid_encoding");
    let tok = values(&v)[0].clone();
    let (_, v) = w.call("POST", "/v1/unprotect", Some(&app), json!({"values": [tok], "encoding": "base64"}));
    assert_eq!(values(&v), vec![json!(bin)]);
    let (_, v) = w.call("POST", "/v1/unprotect", Some(&app), json!({"values": [tok]}));
    assert_eq!(v["results"][0]["error"]["code"], "not_utf8");
}

#[test]
fn local_kek_needs_dev_mode() {
    let mut w = world();
    w.config.dev_mode = false;
    let (s, v) = w.scheme("acme", pii(json!({})));
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("dev_mode_required")));
}

/// Issue 19 item 5: a DEK-cache hit used to skip the dev-mode gate, so with a cache that
/// outlives the switch (the host's key-value store) local-KEK schemes kept working after
/// `dev_mode` was turned off.
#[test]
fn a_cached_local_key_stops_working_when_dev_mode_is_off() {
    let mut w = world_with(
        MapVars::default()
            .with("dek_cache", "true")
            .with("dek_cache_key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    );
    assert_eq!(w.scheme("acme", pii(json!({"policy": {"protect": ["app"], "unprotect": ["app"]}}))).0, 201);
    let app = token("acme", &["app"]);
    let (s, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["4111"]}));
    assert_eq!(s, 200, "{v}");
    let tok = values(&v)[0].clone();
    assert!(!w.kv.0.borrow().is_empty(), "the data key is cached");

    w.config.dev_mode = false;
    for (path, body) in [
        ("/v1/protect", json!({"scheme": "pii", "values": ["4111"]})),
        ("/v1/unprotect", json!({"values": [tok.clone()]})),
    ] {
        let (s, v) = w.call("POST", path, Some(&app), body);
        assert_eq!((s, v["error"]["code"].as_str()), (422, Some("dev_mode_required")), "{path}: {v}");
    }
    // back in dev mode the same cache serves again
    w.config.dev_mode = true;
    let (s, v) = w.call("POST", "/v1/unprotect", Some(&app), json!({"values": [tok]}));
    assert_eq!((s, values(&v)), (200, vec![json!("4111")]));
}

/// Issue 19 item 7: a wrong-typed field is described by its path and the expected type, never
/// by the value sent (serde's own text quoted it).
#[test]
fn shape_errors_never_echo_the_value() {
    let mut w = world();
    w.scheme("acme", pii(json!({})));
    let app = token("acme", &["app"]);
    let admin = token("acme", &["admin"]);
    let prefix = "the request does not match its schema: ";
    let cases: Vec<(&str, &str, Value, u16, String)> = vec![
        (
            "/v1/protect",
            app.as_str(),
            json!({"scheme": "pii", "values": "4111111111111111"}),
            400,
            format!("{prefix}`values` has the wrong type or value; expected a sequence"),
        ),
        (
            "/v1/protect",
            app.as_str(),
            json!({"scheme": "pii", "values": ["a", ["4111111111111111"]]}),
            400,
            format!("{prefix}`values[1]` has the wrong type or value; expected a string"),
        ),
        (
            "/v1/protect",
            app.as_str(),
            json!({"scheme": "pii", "values": ["a"], "encoding": "4111111111111111"}),
            400,
            format!("{prefix}`encoding` has the wrong type or value; expected `utf8` or `base64`"),
        ),
        (
            "/v1/unprotect",
            app.as_str(),
            json!({"values": ["a"], "4111111111111111": 1}),
            400,
            format!(
                "{prefix}the body has a field it does not know; expected one of `scheme`, `values`, `subject`, \
                 `context`, `encoding`"
            ),
        ),
        (
            "/v1/mask",
            app.as_str(),
            json!({"scheme": 4111111111111111_u64, "values": []}),
            400,
            format!("{prefix}`scheme` has the wrong type or value; expected a string"),
        ),
        (
            "/v1/mask",
            app.as_str(),
            json!({"values": []}),
            400,
            format!("{prefix}the body is missing the field `scheme`"),
        ),
        (
            "/v1/schemes",
            admin.as_str(),
            json!({"name": "x", "kek": {"provider": "local"}, "policy": {"4111111111111111": []}}),
            400,
            format!(
                "{prefix}`policy` has a field it does not know; expected one of `protect`, `unprotect`, \
                 `mask`, `admin`, `rewrap`"
            ),
        ),
        (
            "/v1/schemes",
            admin.as_str(),
            json!({"name": "x", "kek": {"provider": "local"}, "mask": {"rule": "4111111111111111"}}),
            422,
            "`mask.rule` has the wrong type or value; expected one of `redact`, `keep_first`, `keep_last`, \
             `email`, `fixed`, `nullify`, `hmac`"
                .to_string(),
        ),
        (
            "/v1/schemes",
            admin.as_str(),
            json!({"name": "x", "kek": {"provider": "local"}, "mask": {"rule": "keep_last", "n": "4111111111111111"}}),
            422,
            "`mask` has the wrong type or value; expected a JSON number".to_string(),
        ),
        (
            "/v1/schemes",
            admin.as_str(),
            json!({"name": "x", "kek": {"provider": "local"}, "mask": {"rule": "fixed", "length": 4, "char": "4111"}}),
            422,
            "`mask` has the wrong type or value; expected a character".to_string(),
        ),
    ];
    for (path, auth, body, status, message) in cases {
        let (s, v) = w.call("POST", path, Some(auth), body.clone());
        assert_eq!(s, status, "{path} {body}: {v}");
        assert_eq!(v["error"]["message"].as_str(), Some(message.as_str()), "{path} {body}");
        assert!(!v.to_string().contains("4111"), "{v}");
    }
}

#[test]
fn openapi_lists_every_route() {
    let doc: Value = serde_json::from_str(OPENAPI).expect("openapi is JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")));
    for (path, method) in [
        ("/healthz", "get"),
        ("/v1/openapi.json", "get"),
        ("/v1/schemes", "get"),
        ("/v1/schemes", "post"),
        ("/v1/schemes/{name}", "get"),
        ("/v1/schemes/{name}", "patch"),
        ("/v1/schemes/{name}/rotate", "post"),
        ("/v1/schemes/{name}/versions", "get"),
        ("/v1/schemes/{name}/versions/{version}/destroy", "post"),
        ("/v1/schemes/{name}/rekey", "post"),
        ("/v1/schemes/{name}/erase", "post"),
        ("/v1/tenant/erase", "post"),
        ("/v1/rewrap", "post"),
        ("/v1/protect", "post"),
        ("/v1/unprotect", "post"),
        ("/v1/mask", "post"),
        ("/v1/subjects/{id}/erase", "post"),
        ("/v1/subjects/erase", "post"),
        ("/v1/erasures/{certificate_id}", "get"),
        ("/.well-known/veil/erasure-keys", "get"),
        ("/v1/snowflake/{operation}", "post"),
        ("/v1/snowflake/{operation}/{scheme}", "post"),
        ("/v1/bigquery", "post"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
}

fn protect_as(w: &mut World, tenant: &str, subject: Option<&str>, vals: &[&str]) -> Vec<Value> {
    let mut body = json!({"scheme": "pii", "values": vals});
    if let Some(s) = subject {
        body["subject"] = json!(s);
    }
    let (s, v) = w.call("POST", "/v1/protect", Some(&token(tenant, &["app"])), body);
    assert_eq!(s, 200, "{v}");
    values(&v)
}

fn unprotect_codes(w: &mut World, tenant: &str, subject: Option<&str>, toks: &[Value]) -> Vec<Value> {
    let mut body = json!({ "values": toks });
    if let Some(s) = subject {
        body["subject"] = json!(s);
    }
    let (s, v) = w.call("POST", "/v1/unprotect", Some(&token(tenant, &["support"])), body);
    assert_eq!(s, 200, "{v}");
    v["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| if r["error"].is_object() { r["error"]["code"].clone() } else { r["value"].clone() })
        .collect()
}

#[test]
fn subject_erasure_end_to_end() {
    let mut w = world();
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
    let a = protect_as(&mut w, "acme", Some("user-1"), &["a1", "a2"]);
    let b = protect_as(&mut w, "acme", Some("user-2"), &["b1"]);
    let plain = protect_as(&mut w, "acme", None, &["p"]);
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-1"), &a), vec![json!("a1"), json!("a2")]);

    // Roles: app and support may not erase; privacy and admin may.
    let path = "/v1/subjects/user-1/erase";
    for roles in [&["app"][..], &["support", "analyst"]] {
        let (s, v) = w.call("POST", path, Some(&token("acme", roles)), Value::Null);
        assert_eq!((s, v["error"]["code"].clone()), (403, json!("forbidden")));
    }
    let (s, cert) = w.call("POST", path, Some(&token("acme", &["privacy"])), Value::Null);
    assert_eq!(s, 200, "{cert}");
    assert_eq!(cert["scope"], "subject");
    assert_eq!(cert["tenant"], "acme");
    assert_eq!(cert["secret_existed"], true);
    assert_eq!(cert["schemes"], json!(["pii"]));
    assert_eq!(
        (cert["alg"].clone(), cert["key_id"].clone(), cert["issuer"].clone()),
        (json!("Ed25519"), json!("k1"), json!("veil"))
    );
    assert_eq!(cert["erased_at"], 1_795_388_400);
    let digest = cert["subject_digest"].as_str().expect("digest");
    assert_eq!(digest.len(), 64);
    assert!(!cert.to_string().contains("user-1"));
    let (s, keys) = w.call("GET", "/.well-known/veil/erasure-keys", None, Value::Null);
    assert_eq!(s, 200);
    let keys = crate::subjects::certificate::parse_jwks(&keys.to_string()).expect("jwks");
    assert_eq!(crate::subjects::certificate::verify(&cert, &keys), Ok(()));

    // Tokens of the erased subject: subject_erased; others unaffected.
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-1"), &a), vec![json!("subject_erased"); 2]);
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-2"), &b), vec![json!("b1")]);
    assert_eq!(unprotect_codes(&mut w, "acme", None, &plain), vec![json!("p")]);

    // Idempotent: the same certificate; and it is stored under its id.
    let (s, again) = w.call("POST", path, Some(&token("acme", &["admin"])), Value::Null);
    assert_eq!((s, &again), (200, &cert));
    let id = cert["certificate_id"].as_str().expect("id").to_owned();
    let (s, got) =
        w.call("GET", &format!("/v1/erasures/{id}"), Some(&token("acme", &["privacy"])), Value::Null);
    assert_eq!((s, &got), (200, &cert));
    let (s, v) =
        w.call("GET", &format!("/v1/erasures/{id}"), Some(&token("other", &["privacy"])), Value::Null);
    assert_eq!((s, v["error"]["code"].clone()), (404, json!("erasure_not_found")));

    // A later protect starts a fresh secret: new tokens open, old ones still do not.
    let fresh = protect_as(&mut w, "acme", Some("user-1"), &["new"]);
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-1"), &fresh), vec![json!("new")]);
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-1"), &a[..1]), vec![json!("subject_erased")]);

    // Never seen: a certificate saying so. Bulk: known, unknown and invalid ids.
    let (s, none) =
        w.call("POST", "/v1/subjects/nobody%2Fhere/erase", Some(&token("acme", &["admin"])), Value::Null);
    assert_eq!(
        (s, none["secret_existed"].clone(), none["secret_created_at"].clone()),
        (200, json!(false), Value::Null)
    );
    let long = "s".repeat(257);
    let (s, v) = w.call(
        "POST",
        "/v1/subjects/erase",
        Some(&token("acme", &["privacy"])),
        json!({"subjects": ["user-2", "never-seen", "", long]}),
    );
    assert_eq!(s, 200, "{v}");
    let r = v["results"].as_array().expect("results");
    assert_eq!(r.len(), 4);
    assert_eq!(
        (r[0]["value"]["secret_existed"].clone(), r[1]["value"]["secret_existed"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(
        (r[2]["error"]["code"].clone(), r[3]["error"]["code"].clone()),
        (json!("invalid_subject"), json!("invalid_subject"))
    );
    assert_eq!(unprotect_codes(&mut w, "acme", Some("user-2"), &b), vec![json!("subject_erased")]);
}

#[test]
fn subjects_without_their_secrets_are_misconfigured() {
    let mut w = world_with(MapVars::default().with("no_subject_keys", "1"));
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
    assert_eq!(protect_as(&mut w, "acme", None, &["x"]).len(), 1, "no subject: nothing needed");
    let (s, v) = w.call(
        "POST",
        "/v1/protect",
        Some(&token("acme", &["app"])),
        json!({"scheme": "pii", "values": ["x"], "subject": "u"}),
    );
    assert_eq!((s, v["error"]["code"].clone()), (500, json!("misconfigured")), "{v}");
    let (s, v) = w.call("POST", "/v1/subjects/u/erase", Some(&token("acme", &["admin"])), Value::Null);
    assert_eq!((s, v["error"]["code"].clone()), (500, json!("misconfigured")), "{v}");
    let (s, v) = w.call("GET", "/.well-known/veil/erasure-keys", None, Value::Null);
    assert_eq!((s, v), (200, json!({"keys": []})));
    // A digest key without a signing key: protect works, erase still refuses (never unsigned).
    let key = base64::engine::general_purpose::STANDARD.encode([6u8; 32]);
    let mut w = world_with(MapVars::default().with("no_subject_keys", "1").with("subject_digest_key", &key));
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
    assert_eq!(protect_as(&mut w, "acme", Some("u"), &["x"]).len(), 1);
    let (s, v) = w.call("POST", "/v1/subjects/u/erase", Some(&token("acme", &["admin"])), Value::Null);
    assert_eq!((s, v["error"]["code"].clone()), (500, json!("misconfigured")), "{v}");
}

fn codes(v: &Value) -> Vec<Value> {
    v["results"].as_array().expect("results").iter().map(|r| r["error"]["code"].clone()).collect()
}

#[test]
fn version_lifecycle_through_the_routes() {
    let mut w = world();
    let admin = token("acme", &["admin"]);
    let (app, support) = (token("acme", &["app"]), token("acme", &["support"]));
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
    let (_, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["old"]}));
    let old = values(&v);
    assert_eq!(w.call("POST", "/v1/schemes/pii/rotate", Some(&admin), Value::Null).0, 200);
    let (s, v) = w.call("PATCH", "/v1/schemes/pii", Some(&admin), json!({"min_decryption_version": 2}));
    assert_eq!((s, &v["min_decryption_version"], &v["rotation_period"]), (200, &json!(2), &Value::Null));
    let (_, v) = w.call("POST", "/v1/unprotect", Some(&support), json!({"values": old}));
    assert_eq!(codes(&v), [json!("key_version_retired")]);
    let (s, v) = w.call("POST", "/v1/schemes/pii/versions/2/destroy", Some(&admin), Value::Null);
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("key_version_active")));
    let (s, v) = w.call("POST", "/v1/schemes/pii/versions/1/destroy", Some(&admin), Value::Null);
    assert_eq!(
        (s, &v["state"], &v["destroyed_by"], &v["destroyed_at"]),
        (200, &json!("destroyed"), &json!("tester"), &json!("2026-11-22T23:00:00Z"))
    );
    let (_, v) = w.call("POST", "/v1/unprotect", Some(&support), json!({"values": old}));
    assert_eq!(codes(&v), [json!("key_version_destroyed")]);
    let (s, v) = w.call("GET", "/v1/schemes/pii/versions", Some(&app), Value::Null);
    assert_eq!(s, 200);
    let states: Vec<&Value> =
        v["versions"].as_array().expect("versions").iter().map(|v| &v["state"]).collect();
    assert_eq!(states, [&json!("destroyed"), &json!("active")]);
    let (s, v) = w.call("PATCH", "/v1/schemes/pii", Some(&admin), json!({"min_decryption_version": 1}));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("key_version_destroyed")));
    // a whole number written with a fraction is that number (JSON Schema's integer); others are not
    let (s, v) = w.call("PATCH", "/v1/schemes/pii", Some(&admin), json!({"min_decryption_version": 1.0}));
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("key_version_destroyed")));
    let (s, v) =
        w.call("PATCH", "/v1/schemes/pii", Some(&admin), json!({"min_decryption_version": 524288.0}));
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("key_version_not_found")));
    for bad in [json!(1.5), json!(-1.0), json!(0.0), json!(1e300)] {
        let (s, v) = w.call("PATCH", "/v1/schemes/pii", Some(&admin), json!({"min_decryption_version": bad}));
        assert_eq!((s, v["error"]["code"].as_str()), (422, Some("invalid_field")), "{bad}");
    }
    // the routes' methods
    let (s, v) = w.call("DELETE", "/v1/schemes/pii", Some(&admin), Value::Null);
    assert_eq!((s, v["error"]["code"].as_str()), (405, Some("method_not_allowed")));
    let (s, _) = w.call("GET", "/v1/schemes/pii/versions/1/destroy", Some(&admin), Value::Null);
    assert_eq!(s, 405);
    let (s, _) = w.call("GET", "/v1/schemes/pii/versions/1", Some(&admin), Value::Null);
    assert_eq!(s, 404);
}

#[test]
fn a_protect_past_the_rotation_period_rotates_once() {
    let mut w = world();
    let app = token("acme", &["app"]);
    assert_eq!(w.scheme("acme", pii(json!({"rotation_period": "1h"}))).0, 201);
    let protect = |w: &mut World| {
        let (s, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["x"]}));
        assert_eq!(s, 200, "{v}");
        v["key_version"].as_u64().expect("version")
    };
    assert_eq!(protect(&mut w), 1);
    w.now += 3599;
    assert_eq!(protect(&mut w), 1, "not yet due");
    w.now += 1;
    assert_eq!(protect(&mut w), 2, "due: rotated first");
    assert_eq!(protect(&mut w), 2, "the new version is fresh");
    w.now += 3600;
    assert_eq!(protect(&mut w), 3);
    let (_, v) = w.call("GET", "/v1/schemes/pii", Some(&app), Value::Null);
    assert_eq!((&v["current_version"], &v["rotation_period"]), (&json!(3), &json!("1h")));
}

/// Issue 19 item 10: what the OpenAPI document says is what the server does.
mod document_is_exact {
    use super::*;
    use crate::ops::{MAX_CONTEXT_CHARS, MAX_SUBJECT_CHARS};
    use crate::scheme::mask::MAX_RULE_LEN;
    use crate::scheme::{MAX_KEY_ID_LEN, MAX_KEY_URL_LEN};

    fn doc() -> Value {
        serde_json::from_str(OPENAPI).expect("openapi is JSON")
    }

    /// Every limit the server enforces on a field stands in the document with the same number.
    #[test]
    fn limits_in_the_document_are_the_codes() {
        let d = doc();
        let s = &d["components"]["schemas"];
        let n = |p: &str| s.pointer(p).and_then(Value::as_u64).unwrap_or_else(|| panic!("{p} missing"));
        assert_eq!(n("/Subject/maxLength"), MAX_SUBJECT_CHARS as u64);
        assert_eq!(n("/Context/maxLength"), MAX_CONTEXT_CHARS as u64);
        assert_eq!(n("/CreateSchemeRequest/properties/description/maxLength"), 1024);
        assert_eq!(n("/KekAwsKms/properties/key_id/maxLength"), MAX_KEY_ID_LEN as u64);
        assert_eq!(n("/KekAzureKeyvault/properties/key_url/maxLength"), MAX_KEY_URL_LEN as u64);
        assert_eq!(n("/Values/maxItems"), crate::config::Limits::default().max_batch as u64);
        let rules = s["MaskRule"]["oneOf"].as_array().expect("rules");
        let mut seen = 0;
        for r in rules {
            let p = &r["properties"];
            if p.get("n").is_some() {
                assert_eq!(
                    (p["n"]["minimum"].as_u64(), p["n"]["maximum"].as_u64()),
                    (Some(0), Some(MAX_RULE_LEN.into()))
                );
                seen += 1;
            }
            if p.get("length").is_some() {
                let l = &p["length"];
                assert_eq!(
                    (l["minimum"].as_u64(), l["maximum"].as_u64()),
                    (Some(1), Some(MAX_RULE_LEN.into()))
                );
                seen += 1;
            }
            if p.get("char").is_some() {
                assert_eq!(p["char"]["pattern"], "^[^\\u0000-\\u001f\\u007f-\\u009f]$");
                seen += 1;
            }
        }
        assert_eq!(seen, 3 + 4, "n twice, length once, char four times");
    }

    /// The served document states this deployment's `max_batch`; with the default it is the file.
    #[test]
    fn served_document_carries_the_configured_batch_limit() {
        let mut w = world();
        let (s, v) = w.call("GET", "/v1/openapi.json", None, Value::Null);
        assert_eq!((s, &v), (200, &doc()));
        let mut w = world_with(MapVars::default().with("max_batch", "7"));
        let (s, v) = w.call("GET", "/v1/openapi.json", None, Value::Null);
        assert_eq!((s, v["components"]["schemas"]["Values"]["maxItems"].as_u64()), (200, Some(7)));
        let mut expected = doc();
        expected["components"]["schemas"]["Values"]["maxItems"] = json!(7);
        expected["components"]["schemas"]["EraseSubjectsRequest"]["properties"]["subjects"]["maxItems"] =
            json!(7);
        expected["components"]["schemas"]["SnowflakeRequest"]["properties"]["data"]["maxItems"] = json!(7);
        expected["components"]["schemas"]["BigQueryRequest"]["properties"]["calls"]["maxItems"] = json!(7);
        assert_eq!(v, expected, "nothing else differs");
    }

    /// A caller's malformed key URL or key id is 422 `invalid_field` before any vault is asked
    /// (on main it was 500 `misconfigured`, meant for the deployment's own variables).
    #[test]
    fn malformed_kek_references_are_the_callers_422() {
        let mut w = world();
        for kek in [
            json!({"provider": "azure-keyvault", "key_url": "http://contoso.vault.azure.net/keys/k"}),
            json!({"provider": "azure-keyvault", "key_url": "not a url"}),
            json!({"provider": "azure-keyvault", "key_url": "https://example.com/keys/k"}),
            json!({"provider": "azure-keyvault", "key_url": "https://contoso.vault.azure.net/keys/"}),
            json!({"provider": "azure-keyvault", "key_url": ""}),
            json!({"provider": "aws-kms", "key_id": ""}),
            json!({"provider": "aws-kms", "key_id": "alias/with space"}),
        ] {
            let (s, v) = w.scheme("acme", pii(json!({"kek": kek.clone()})));
            assert_eq!((s, v["error"]["code"].as_str()), (422, Some("invalid_field")), "{kek}: {v}");
            let msg = v["error"]["message"].as_str().unwrap_or_default();
            assert!(msg.starts_with("kek.key_url: ") || msg.starts_with("kek.key_id: "), "{msg}");
        }
        // A well-formed reference gets past the shape check to the provider (no vault configured
        // in this world: the deployment's problem, 500 `misconfigured`).
        let good = json!({"provider": "azure-keyvault", "key_url": "https://contoso.vault.azure.net/keys/k"});
        let (s, v) = w.scheme("acme", pii(json!({"kek": good})));
        assert_eq!((s, v["error"]["code"].as_str()), (500, Some("misconfigured")), "{v}");
    }

    /// `null` where the document says string (or object) is refused, not read as absent.
    #[test]
    fn null_is_refused_where_the_document_says_string() {
        let mut w = world();
        assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
        let app = token("acme", &["app"]);
        let support = token("acme", &["support"]);
        for field in ["subject", "context"] {
            let (s, v) = w.call(
                "POST",
                "/v1/protect",
                Some(&app),
                json!({"scheme": "pii", "values": ["x"], field: null}),
            );
            assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{field}: {v}");
            let (s, v) = w.call("POST", "/v1/unprotect", Some(&support), json!({"values": [], field: null}));
            assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{field}: {v}");
        }
        for field in ["algorithm", "mask", "description", "policy"] {
            let (s, v) = w.scheme("acme", pii(json!({"name": "other", field: null})));
            assert!(matches!(s, 400 | 422), "{field}: {s} {v}");
            assert_ne!(s / 100, 2, "{field}");
        }
        assert_eq!(w.call("GET", "/v1/schemes/other", Some(&token("acme", &["admin"])), Value::Null).0, 404);
    }

    /// `subject`, `context` and `description` are limited in characters, as `maxLength` counts.
    #[test]
    fn text_limits_count_characters() {
        let mut w = world();
        assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
        let app = token("acme", &["app"]);
        let protect = |w: &mut World, field: &str, v: String| {
            w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["x"], field: v}))
        };
        assert_eq!(protect(&mut w, "subject", "é".repeat(MAX_SUBJECT_CHARS)).0, 200);
        assert_eq!(protect(&mut w, "context", "日".repeat(MAX_CONTEXT_CHARS)).0, 200);
        for (field, v) in
            [("subject", "s".repeat(MAX_SUBJECT_CHARS + 1)), ("context", "é".repeat(MAX_CONTEXT_CHARS + 1))]
        {
            let (s, body) = protect(&mut w, field, v);
            assert_eq!((s, body["error"]["code"].as_str()), (422, Some("invalid_field")), "{field}");
        }
        assert_eq!(w.scheme("acme", pii(json!({"name": "d1", "description": "日".repeat(1024)}))).0, 201);
        let (s, v) = w.scheme("acme", pii(json!({"name": "d2", "description": "d".repeat(1025)})));
        assert_eq!((s, v["error"]["code"].as_str()), (422, Some("invalid_field")));
    }
}

/// Issue 19 item 6 through the whole protect path: seals counted in the real store, automatic
/// rotation at the limit, and a replayed older DEK-cache entry that cannot reset the use count.
mod key_use_limits {
    use super::*;

    const CACHE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn protect(w: &mut World, n: usize) -> (u64, u32) {
        let app = token("acme", &["app"]);
        let (s, v) =
            w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": vec!["x"; n]}));
        assert_eq!(s, 200, "{v}");
        (v["key_version"].as_u64().expect("key_version"), w.unwraps)
    }

    #[test]
    fn rotation_at_the_limit() {
        let mut w = world_with(MapVars::default().with("max_seals_per_key", "4"));
        assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
        let versions: Vec<u64> = [3, 1, 1, 3, 1, 4].iter().map(|n| protect(&mut w, *n).0).collect();
        assert_eq!(versions, [1, 1, 2, 2, 3, 4]);
        let app = token("acme", &["app"]);
        let (s, v) =
            w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": vec!["x"; 5]}));
        assert_eq!((s, v["error"]["code"].as_str()), (413, Some("batch_too_large")));
        let store = crate::store::Store::new(&w.db);
        let (t, n) = (
            crate::ids::TenantId::parse("acme").expect("t"),
            crate::ids::SchemeName::parse("pii").expect("s"),
        );
        let seals: Vec<u64> = (1..=4)
            .map(|v| store.seals(&t, &n, crate::ids::KeyVersion::new(v).expect("v")).expect("seals"))
            .collect();
        // each full version also counts the reservation that found it full
        assert_eq!(seals, [5, 5, 5, 4]);
    }

    #[test]
    fn a_replayed_cache_entry_cannot_reset_the_use_count() {
        let vars = MapVars::default()
            .with("dek_cache", "true")
            .with("dek_cache_key", CACHE_KEY)
            .with("dek_cache_max_uses", "3")
            // exact counting (block size 1), so that every protect checks the use count
            .with("max_seals_per_key", "1000000");
        let mut w = world_with(vars);
        assert_eq!(w.scheme("acme", pii(json!({}))).0, 201);
        assert_eq!(protect(&mut w, 1), (1, 1), "a miss: the vault is asked and the key cached");
        let first = w.kv.0.borrow().clone();
        assert_eq!(first.len(), 2, "the DEK cache's entry and the scheme cache's");
        assert_eq!(protect(&mut w, 1), (1, 0));
        assert_eq!(protect(&mut w, 1), (1, 0));
        assert_eq!(protect(&mut w, 1), (1, 1), "3 values sealed since it was cached: used up");
        assert_eq!(protect(&mut w, 1), (1, 0));
        // replay the first entry: on the v1 layout this gave the key 3 more uses
        *w.kv.0.borrow_mut() = first;
        assert_eq!(protect(&mut w, 1), (1, 1), "the replayed entry is as old as it is");
        assert_eq!(protect(&mut w, 1), (1, 0));
    }
}

/// How many DEK-cache entries the world's key-value store holds (the scheme cache's beside them
/// are not data keys).
fn deks_cached(w: &World) -> usize {
    w.kv.0.borrow().keys().filter(|k| k.starts_with("veil/dek-cache/")).count()
}

/// Scheme and tenant erasure (docs/erasure.md, "Erasing a scheme or the tenant"): confirmations,
/// certificates, the DEK cache emptied, name reuse, and idempotence.
#[test]
fn scheme_and_tenant_erasure() {
    let mut w = world_with(
        MapVars::default()
            .with("dek_cache", "true")
            .with("dek_cache_key", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),
    );
    let admin = token("acme", &["admin"]);
    for t in ["acme", "other"] {
        assert_eq!(w.scheme(t, pii(json!({}))).0, 201);
    }
    let old = protect_as(&mut w, "acme", None, &["a"]);
    assert_eq!(w.call("POST", "/v1/schemes/pii/rotate", Some(&admin), Value::Null).0, 200);
    let newer = protect_as(&mut w, "acme", Some("u"), &["b"]);
    let kept = protect_as(&mut w, "other", None, &["c"]);
    assert_eq!(deks_cached(&w), 3, "acme v1, acme v2, other v1 cached");

    // Only admin; confirm must name the scheme (missing, wrong, empty body).
    let path = "/v1/schemes/pii/erase";
    let (s, v) = w.call("POST", path, Some(&token("acme", &["privacy"])), json!({"confirm": "pii"}));
    assert_eq!((s, v["error"]["code"].clone()), (403, json!("forbidden")));
    for body in [json!({}), json!({"confirm": "PII"}), json!({"confirm": "acme"}), Value::Null] {
        let (s, v) = w.call("POST", path, Some(&admin), body.clone());
        assert_eq!((s, v["error"]["code"].clone()), (409, json!("confirmation_mismatch")), "{body}");
    }
    let (s, v) = w.call("POST", path, Some(&admin), json!({"confirm": 1}));
    assert_eq!((s, v["error"]["code"].clone()), (400, json!("invalid_request")));
    let (s, v) = w.call("POST", "/v1/schemes/nope/erase", Some(&admin), json!({"confirm": "nope"}));
    assert_eq!((s, v["error"]["code"].clone()), (404, json!("scheme_not_found")));
    assert_eq!(unprotect_codes(&mut w, "acme", None, &old), vec![json!("a")], "nothing refused erased");

    let (s, cert) = w.call("POST", path, Some(&admin), json!({"confirm": "pii"}));
    assert_eq!(s, 200, "{cert}");
    assert_eq!(
        (&cert["scope"], &cert["tenant"], &cert["schemes"], &cert["key_versions"]),
        (&json!("scheme"), &json!("acme"), &json!(["pii"]), &json!({"pii": [1, 2]}))
    );
    let (_, keys) = w.call("GET", "/.well-known/veil/erasure-keys", None, Value::Null);
    let keys = crate::subjects::certificate::parse_jwks(&keys.to_string()).expect("jwks");
    assert_eq!(crate::subjects::certificate::verify(&cert, &keys), Ok(()));
    assert_eq!(deks_cached(&w), 1, "only the other tenant's key is still cached");
    assert_eq!(unprotect_codes(&mut w, "acme", None, &old), vec![json!("key_version_destroyed")]);
    assert_eq!(unprotect_codes(&mut w, "acme", Some("u"), &newer), vec![json!("key_version_destroyed")]);
    assert_eq!(unprotect_codes(&mut w, "other", None, &kept), vec![json!("c")]);

    // Refused on the erased scheme: protect, mask, rotate, PATCH, rekey, destroy.
    let app = token("acme", &["app"]);
    let (s, v) = w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["x"]}));
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("scheme_erased")));
    let analyst = token("acme", &["analyst"]);
    let (s, v) = w.call("POST", "/v1/mask", Some(&analyst), json!({"scheme": "pii", "values": ["x"]}));
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("scheme_erased")));
    for (method, p, body) in [
        ("POST", "/v1/schemes/pii/rotate", Value::Null),
        ("PATCH", "/v1/schemes/pii", json!({"rotation_period": "1d"})),
        ("POST", "/v1/schemes/pii/rekey", Value::Null),
        ("POST", "/v1/schemes/pii/versions/1/destroy", Value::Null),
    ] {
        let (s, v) = w.call(method, p, Some(&admin), body);
        assert_eq!((s, v["error"]["code"].clone()), (409, json!("scheme_erased")), "{p}");
    }
    let (s, v) = w.call("GET", "/v1/schemes/pii", Some(&admin), Value::Null);
    assert_eq!((s, &v["erased_at"]), (200, &json!("2026-11-22T23:00:00Z")));

    // Idempotent, and stored under its id.
    let (s, again) = w.call("POST", path, Some(&admin), json!({"confirm": "pii"}));
    assert_eq!((s, &again), (200, &cert));
    let id = cert["certificate_id"].as_str().expect("id").to_owned();
    let (s, got) = w.call("GET", &format!("/v1/erasures/{id}"), Some(&admin), Value::Null);
    assert_eq!((s, &got), (200, &cert));

    // The name is reused by creating a new scheme: versions carry on above the erased ones.
    let (s, v) = w.scheme("acme", pii(json!({})));
    assert_eq!((s, &v["current_version"], &v["erased_at"]), (201, &json!(3), &Value::Null), "{v}");
    assert_eq!(w.scheme("acme", pii(json!({}))).0, 409, "taken again");
    let fresh = protect_as(&mut w, "acme", None, &["fresh"]);
    assert!(fresh[0].as_str().is_some_and(|t| t.starts_with("veil.1.pii.3.")), "{fresh:?}");
    assert_eq!(unprotect_codes(&mut w, "acme", None, &fresh), vec![json!("fresh")]);
    assert_eq!(unprotect_codes(&mut w, "acme", None, &old), vec![json!("key_version_destroyed")]);
    // Erasing the new scheme makes a new certificate.
    let (s, second) = w.call("POST", path, Some(&admin), json!({"confirm": "pii"}));
    assert_eq!(s, 200);
    assert_ne!(second["certificate_id"], cert["certificate_id"]);
    assert_eq!(second["key_versions"], json!({"pii": [1, 2, 3]}));

    // The tenant: confirm is the tenant id; every scheme and every subject secret goes.
    let other = token("other", &["admin"]);
    assert_eq!(w.call("POST", "/v1/schemes", Some(&other), pii(json!({"name": "cards"}))).0, 201);
    let subj = protect_as(&mut w, "other", Some("s1"), &["d"]);
    let (s, v) = w.call("POST", "/v1/tenant/erase", Some(&other), json!({"confirm": "acme"}));
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("confirmation_mismatch")));
    let (s, t) = w.call("POST", "/v1/tenant/erase", Some(&other), json!({"confirm": "other"}));
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        (&t["scope"], &t["tenant"], &t["schemes"], &t["key_versions"], &t["subject_secrets_deleted"]),
        (
            &json!("tenant"),
            &json!("other"),
            &json!(["cards", "pii"]),
            &json!({"cards": [1], "pii": [1]}),
            &json!(1)
        )
    );
    assert_eq!(crate::subjects::certificate::verify(&t, &keys), Ok(()));
    assert_eq!(deks_cached(&w), 0, "no data key of any tenant is cached any more");
    assert_eq!(unprotect_codes(&mut w, "other", None, &kept), vec![json!("key_version_destroyed")]);
    assert_eq!(unprotect_codes(&mut w, "other", Some("s1"), &subj), vec![json!("key_version_destroyed")]);
    let (s, again) = w.call("POST", "/v1/tenant/erase", Some(&other), json!({"confirm": "other"}));
    assert_eq!((s, &again), (200, &t));
    // A scheme erased with the tenant answers with the tenant's certificate.
    let (s, v) = w.call("POST", "/v1/schemes/cards/erase", Some(&other), json!({"confirm": "cards"}));
    assert_eq!((s, &v), (200, &t));
    // acme is untouched by other's erasure.
    assert_eq!(unprotect_codes(&mut w, "acme", None, &fresh), vec![json!("key_version_destroyed")]);
}

#[test]
fn unprotect_and_rewrap_with_a_scheme_mark_other_schemes_per_item() {
    let mut w = world();
    let policy = json!({"policy": {"protect": ["app"], "unprotect": ["app"], "rewrap": ["app"]}});
    for name in ["pii", "cards"] {
        let mut body = pii(policy.clone());
        body["name"] = json!(name);
        assert_eq!(w.scheme("acme", body).0, 201);
    }
    let app = token("acme", &["app"]);
    let a = values(&w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "pii", "values": ["a"]})).1);
    let b = values(&w.call("POST", "/v1/protect", Some(&app), json!({"scheme": "cards", "values": ["b"]})).1);
    let toks = json!([a[0], b[0], "junk"]);
    for path in ["/v1/unprotect", "/v1/rewrap"] {
        let (s, v) = w.call("POST", path, Some(&app), json!({"scheme": "pii", "values": toks}));
        assert_eq!(s, 200, "{v}");
        let codes: Vec<Value> =
            v["results"].as_array().expect("results").iter().map(|r| r["error"]["code"].clone()).collect();
        assert_eq!(codes, vec![Value::Null, json!("scheme_mismatch"), json!("invalid_token")], "{path}");
        let (s, v) = w.call("POST", path, Some(&app), json!({"scheme": "nope", "values": toks}));
        assert_eq!((s, v["error"]["code"].as_str()), (404, Some("scheme_not_found")), "{path}");
        let (s, v) = w.call("POST", path, Some(&app), json!({"scheme": null, "values": toks}));
        assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")), "{path}");
    }
}

#[test]
fn form_bodies_are_415_naming_the_header() {
    let mut w = world();
    w.seed = 1;
    let mut ctx = Ctx::new(&w.config, &w.db, Csprng::from_seed([9; 32]), w.now);
    let app = token("acme", &["app"]);
    for (ct, want) in
        [(Some("application/x-www-form-urlencoded"), 415), (Some("text/plain"), 415), (None, 404)]
    {
        let req = ApiRequest {
            method: "POST",
            path: "/v1/protect",
            query: "",
            content_type: ct,
            authorization: Some(&app),
            api_key: None,
            headers: &[],
            body: br#"{"scheme":"pii","values":["x"]}"#,
        };
        let r = handle(Deps { ctx: &mut ctx, auth: Ok(&w.auth), jwks: &NoJwks }, &req);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(r.status, want, "{ct:?}: {v}");
        if want == 415 {
            assert!(
                v["error"]["message"].as_str().is_some_and(|m| m.contains("Content-Type: application/json")),
                "{v}"
            );
        } else {
            assert_eq!(v["error"]["code"], "scheme_not_found", "no content type is read as JSON");
        }
    }
}

#[test]
fn snowflake_keeps_row_numbers_order_and_nulls() {
    let mut w = world();
    let policy = json!({"policy": {"protect": ["app"], "unprotect": ["app"], "mask": ["app"]}});
    assert_eq!(w.scheme("acme", pii(policy)).0, 201);
    let app = token("acme", &["app"]);
    w.headers = vec![("sf-custom-scheme".into(), "pii".into())];
    let (s, v) = w.call(
        "POST",
        "/v1/snowflake/protect",
        Some(&app),
        json!({"data": [[2, "x"], [0, null], [1, "yz"]]}),
    );
    assert_eq!(s, 200, "{v}");
    let rows = v["data"].as_array().expect("data").clone();
    assert_eq!(rows.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), vec![json!(2), json!(0), json!(1)]);
    assert!(rows[1][1].is_null());
    let back = json!({"data": [[7, rows[0][1]], [8, null], [9, rows[2][1]], [10, "junk"]]});
    let (s, v) = w.call("POST", "/v1/snowflake/unprotect", Some(&app), back.clone());
    assert_eq!((s, v.clone()), (200, json!({"data": [[7, "x"], [8, null], [9, "yz"], [10, null]]})));
    w.headers.push(("sf-custom-on-error".into(), "fail".into()));
    let (s, v) = w.call("POST", "/v1/snowflake/unprotect", Some(&app), back);
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("row_failed")), "{v}");
    w.headers.clear();
    let (s, v) =
        w.call("POST", "/v1/snowflake/mask/pii", Some(&app), json!({"data": [[0, "4111111111111111"]]}));
    assert_eq!((s, v), (200, json!({"data": [[0, "************1111"]]})));
    let (s, v) = w.call("POST", "/v1/snowflake/protect", Some(&app), json!({"data": [[0, "x"]]}));
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")));
    let (s, _) = w.call("POST", "/v1/snowflake/encrypt/pii", Some(&app), json!({"data": []}));
    assert_eq!(s, 404);
}

#[test]
fn bigquery_replies_in_order_and_fails_with_error_message() {
    let mut w = world();
    let policy = json!({"policy": {"protect": ["app"], "unprotect": ["app"]}});
    assert_eq!(w.scheme("acme", pii(policy)).0, 201);
    let app = token("acme", &["app"]);
    let ctx = |op: &str| json!({"scheme": "pii", "operation": op});
    let (s, v) = w.call(
        "POST",
        "/v1/bigquery",
        Some(&app),
        json!({"requestId": "r1", "caller": "//bigquery", "sessionUser": "u@x", "userDefinedContext": ctx("protect"),
               "calls": [["a"], [null], ["b"]]}),
    );
    assert_eq!(s, 200, "{v}");
    let replies = v["replies"].as_array().expect("replies").clone();
    assert!(replies[1].is_null());
    let (s, v) = w.call(
        "POST",
        "/v1/bigquery",
        Some(&app),
        json!({"userDefinedContext": ctx("unprotect"), "calls": [[replies[2]], [replies[0]], [null], ["junk"]]}),
    );
    assert_eq!((s, v), (200, json!({"replies": ["b", "a", null, null]})));
    let (s, v) = w.call(
        "POST",
        "/v1/bigquery",
        Some(&app),
        json!({"userDefinedContext": {"scheme": "pii", "operation": "unprotect", "on_error": "fail"}, "calls": [["junk"]]}),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (422, Some("row_failed")));
    assert!(v["errorMessage"].as_str().is_some_and(|m| m.starts_with("row_failed: ")), "{v}");
    let (s, v) = w.call(
        "POST",
        "/v1/bigquery",
        Some(&app),
        json!({"userDefinedContext": ctx("decrypt"), "calls": []}),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("invalid_request")));
}

/// The Transit-compatible routes in process (docs/transit.md); tests/integration/test_compat_transit.py
/// holds them to a real OpenBao.
mod transit_routes {
    use super::*;

    impl World {
        fn transit(
            &mut self,
            method: &str,
            path: &str,
            vault_token: Option<&str>,
            body: Value,
        ) -> (u16, Value) {
            self.seed = self.seed.wrapping_add(1);
            let mut ctx = Ctx::new(&self.config, &self.db, Csprng::from_seed([self.seed; 32]), self.now);
            let mut headers = self.headers.clone();
            if let Some(t) = vault_token {
                headers.push(("x-vault-token".into(), t.to_owned()));
            }
            let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
            let (path, query) = path.split_once('?').unwrap_or((path, ""));
            let req = ApiRequest {
                method,
                path,
                query,
                content_type: None,
                authorization: None,
                headers: &headers,
                api_key: None,
                body: &body,
            };
            let r = handle(Deps { ctx: &mut ctx, auth: Ok(&self.auth), jwks: &NoJwks }, &req);
            let v: Value = serde_json::from_slice(&r.body).expect("every answer is JSON");
            // a failure is `{"errors": [...]}`, except a batch's, which answers every item
            if r.status >= 400 && !v["data"]["batch_results"].is_array() {
                assert!(v["errors"].is_array() && v.as_object().is_some_and(|o| o.len() == 1), "{v}");
            }
            (r.status, v)
        }
    }

    fn bare(t: &str) -> String {
        t.strip_prefix("Bearer ").expect("bearer").to_owned()
    }

    #[test]
    fn encrypt_decrypt_rewrap_through_x_vault_token() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        let (s, v) =
            w.transit("POST", "/v1/transit/keys/orders", Some(&admin), json!({"type": "chacha20-poly1305"}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (v["data"]["type"].clone(), v["data"]["latest_version"].clone()),
            (json!("chacha20-poly1305"), json!(1))
        );
        assert!(v["request_id"].is_string() && v["wrap_info"].is_null() && v["auth"].is_null());
        let pt = base64::engine::general_purpose::STANDARD.encode("4111111111111111");
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/orders", Some(&admin), json!({"plaintext": pt}));
        assert_eq!(s, 200, "{v}");
        let ct = v["data"]["ciphertext"].as_str().expect("ciphertext").to_owned();
        assert!(ct.starts_with("vault:v1:"), "{ct}");
        let (s, v) = w.transit("PUT", "/v1/transit/decrypt/orders", Some(&admin), json!({"ciphertext": ct}));
        assert_eq!((s, v["data"]["plaintext"].clone()), (200, json!(pt)));
        // rotate, rewrap to v2, retire v1
        let (s, v) = w.transit("POST", "/v1/transit/keys/orders/rotate", Some(&admin), Value::Null);
        assert_eq!((s, v["data"]["latest_version"].clone()), (200, json!(2)), "{v}");
        let (s, v) = w.transit("POST", "/v1/transit/rewrap/orders", Some(&admin), json!({"ciphertext": ct}));
        assert_eq!((s, v["data"]["key_version"].clone()), (200, json!(2)), "{v}");
        let ct2 = v["data"]["ciphertext"].as_str().expect("ct").to_owned();
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/keys/orders/config",
            Some(&admin),
            json!({"min_decryption_version": "2"}),
        );
        assert_eq!((s, v["data"]["keys"].as_object().map(|k| k.len())), (200, Some(1)), "{v}");
        let (s, _) = w.transit("POST", "/v1/transit/decrypt/orders", Some(&admin), json!({"ciphertext": ct}));
        assert_eq!(s, 400);
        let (s, v) =
            w.transit("POST", "/v1/transit/decrypt/orders", Some(&admin), json!({"ciphertext": ct2}));
        assert_eq!((s, v["data"]["plaintext"].clone()), (200, json!(pt)));
        // the ciphertext is the Veil token of the key
        let (version, payload) =
            ct2.strip_prefix("vault:v").and_then(|r| r.split_once(':')).expect("spelling");
        let sealed = base64::engine::general_purpose::STANDARD.decode(payload).expect("b64");
        let tok = format!(
            "veil.1.orders.{version}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
        );
        let (s, v) =
            w.call("POST", "/v1/unprotect", Some(&token("acme", &["admin"])), json!({"values": [tok]}));
        assert_eq!((s, v["results"][0]["value"].clone()), (200, json!("4111111111111111")), "{v}");
    }

    #[test]
    fn batches_echo_references_and_fail_per_item() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        assert_eq!(w.transit("POST", "/v1/transit/keys/k", Some(&admin), Value::Null).0, 200);
        let good = base64::engine::general_purpose::STANDARD.encode("x");
        // some items with a context and some without: refused whole, as Transit refuses it
        let mixed = json!({"batch_input": [{"plaintext": good, "context": "Y3R4"}, {"plaintext": good}]});
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), mixed);
        assert_eq!(
            (s, v),
            (400, json!({"errors": ["context should be set either in all the request blocks or in none"]}))
        );
        let body = json!({"batch_input": [
            {"plaintext": good, "reference": "a", "context": "Y3R4"},
            {"plaintext": "!!", "reference": "secret-ref-b", "context": "Y3R4"},
            {"plaintext": good, "context": "b3RoZXI="},
        ]});
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), body);
        assert_eq!(s, 400, "{v}");
        let r = v["data"]["batch_results"].as_array().expect("results");
        assert_eq!(
            r.iter().map(|x| x["reference"].clone()).collect::<Vec<_>>(),
            [json!("a"), json!("secret-ref-b"), json!("")]
        );
        assert!(
            r[0]["ciphertext"].is_string() && r[1]["error"].is_string() && r[2]["ciphertext"].is_string()
        );
        // each item opens with its own context only
        let items = json!({"batch_input": [
            {"ciphertext": r[0]["ciphertext"], "context": "Y3R4"},
            {"ciphertext": r[0]["ciphertext"], "context": "b3RoZXI="},
            {"ciphertext": r[2]["ciphertext"], "context": "b3RoZXI="},
        ], "partial_failure_response_code": 207});
        let (s, v) = w.transit("POST", "/v1/transit/decrypt/k", Some(&admin), items);
        assert_eq!(s, 207, "{v}");
        let r = v["data"]["batch_results"].as_array().expect("results");
        assert_eq!(r[0]["plaintext"], json!(good));
        assert!(r[1]["error"].is_string() && r[1]["plaintext"] == json!(""));
        assert_eq!(r[2]["plaintext"], json!(good));
    }

    #[test]
    fn errors_have_transit_statuses_and_shapes() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        let app = bare(&token("acme", &["app"]));
        assert_eq!(w.transit("POST", "/v1/transit/keys/k", Some(&admin), json!({})).0, 200);
        let pt = json!({"plaintext": "eA=="});
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", None, pt.clone()).0, 403);
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", Some("nope"), pt.clone()).0, 403);
        // deny by default: the Transit key's policy lists only admin
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", Some(&app), pt.clone()).0, 403);
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/missing", Some(&admin), pt.clone());
        assert_eq!((s, v), (400, json!({"errors": ["encryption key not found"]})));
        // no upsert: a caller who may not create keys gets Transit's answer to a token without
        // create rights
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/missing", Some(&app), pt.clone()).0, 403);
        assert_eq!(
            w.transit("GET", "/v1/transit/keys/missing", Some(&admin), Value::Null),
            (404, json!({"errors": []}))
        );
        assert_eq!(
            w.transit("GET", "/v1/transit/nothing/here", Some(&admin), Value::Null),
            (404, json!({"errors": []}))
        );
        assert_eq!(w.transit("PATCH", "/v1/transit/encrypt/k", Some(&admin), pt.clone()).0, 405);
        let (s, v) = w.transit("POST", "/v1/transit/keys/r", Some(&admin), json!({"type": "rsa-4096"}));
        assert!(s == 400 && !v.to_string().contains("rsa-4096"), "{v}");
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), json!({})).0, 400);
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), json!({"plaintext": 5})).0, 400);
        assert_eq!(
            w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), json!({"batch_input": []})).0,
            400
        );
        let (s, v) = w.transit("LIST", "/v1/transit/keys", Some(&admin), Value::Null);
        assert_eq!((s, v["data"]["keys"].clone()), (200, json!(["k"])));
        let (s, v) = w.transit("GET", "/v1/transit/keys?list=true", Some(&admin), Value::Null);
        assert_eq!((s, v["data"]["keys"].clone()), (200, json!(["k"])));
        // another tenant sees none of it
        let other = bare(&token("other", &["admin"]));
        assert_eq!(w.transit("GET", "/v1/transit/keys?list=true", Some(&other), Value::Null).0, 404);
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/k", Some(&other), pt).0, 400);
        w.headers.push(("x-vault-namespace".into(), "team-a".into()));
        let (s, v) = w.transit("POST", "/v1/transit/random", Some(&admin), json!({}));
        assert!(s == 400 && !v.to_string().contains("team-a"), "{v}");
    }

    #[test]
    fn hmac_verify_datakey_random_and_hash() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        assert_eq!(w.transit("POST", "/v1/transit/keys/k", Some(&admin), json!({})).0, 200);
        let (s, v) = w.transit("POST", "/v1/transit/hmac/k", Some(&admin), json!({"input": "aGVsbG8="}));
        assert_eq!(s, 200, "{v}");
        let mac = v["data"]["hmac"].clone();
        assert!(mac.as_str().is_some_and(|m| m.starts_with("vault:v1:")));
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/verify/k/sha2-256",
            Some(&admin),
            json!({"input": "aGVsbG8=", "hmac": mac}),
        );
        assert_eq!((s, v["data"]["valid"].clone()), (200, json!(true)));
        let (_, v) = w.transit(
            "POST",
            "/v1/transit/verify/k",
            Some(&admin),
            json!({"input": "aGVsbG8h", "hmac": mac}),
        );
        assert_eq!(v["data"]["valid"], json!(false));
        assert_eq!(
            w.transit("POST", "/v1/transit/hmac/k/sha2-512", Some(&admin), json!({"input": "eA=="})).0,
            400
        );
        let (s, v) =
            w.transit("POST", "/v1/transit/datakey/plaintext/k", Some(&admin), json!({"bits": "128"}));
        assert_eq!(s, 200, "{v}");
        let key = v["data"]["plaintext"].clone();
        let (_, back) = w.transit(
            "POST",
            "/v1/transit/decrypt/k",
            Some(&admin),
            json!({"ciphertext": v["data"]["ciphertext"]}),
        );
        assert_eq!(back["data"]["plaintext"], key);
        let (_, v) = w.transit("POST", "/v1/transit/datakey/wrapped/k", Some(&admin), json!({}));
        assert!(v["data"].get("plaintext").is_none() && v["data"]["ciphertext"].is_string());
        let (s, v) = w.transit("POST", "/v1/transit/random/16", Some(&admin), json!({"format": "hex"}));
        assert_eq!((s, v["data"]["random_bytes"].as_str().map(str::len)), (200, Some(32)));
        let (_, v) = w.transit("POST", "/v1/transit/hash", Some(&admin), json!({"input": "aGVsbG8="}));
        assert_eq!(
            v["data"]["sum"],
            json!("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
        );
    }

    const MISSING_CONTEXT: &str =
        "missing 'context' for key derivation; the key was created using a derived \
        key, which means additional, per-request information must be included in order to perform operations \
        with the key";

    #[test]
    fn derived_keys_require_a_context_on_every_data_call() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        let (s, v) = w.transit("POST", "/v1/transit/keys/d", Some(&admin), json!({"derived": "true"}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (&v["data"]["derived"], &v["data"]["kdf"], &v["data"]["convergent_encryption"], &v["warnings"]),
            (&json!(true), &json!("hkdf_sha256"), &json!(false), &Value::Null)
        );
        let (_, plain) = w.transit("POST", "/v1/transit/keys/p", Some(&admin), json!({}));
        assert!(plain["data"]["derived"] == json!(false) && plain["data"].get("kdf").is_none());
        let pt = json!({"plaintext": "eA=="});
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/d", Some(&admin), pt.clone());
        assert_eq!((s, v), (400, json!({"errors": [MISSING_CONTEXT]})));
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/encrypt/d",
            Some(&admin),
            json!({"plaintext": "eA==", "context": ""}),
        );
        assert_eq!((s, v), (400, json!({"errors": [MISSING_CONTEXT]})));
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/encrypt/d",
            Some(&admin),
            json!({"plaintext": "eA==", "context": "Yw=="}),
        );
        assert_eq!(s, 200, "{v}");
        let ct = v["data"]["ciphertext"].clone();
        // per item in a batch, after the item's own input error
        let batch = json!({"batch_input": [{"plaintext": "!!"}, {"plaintext": "eA==", "reference": "r"}]});
        let (s, v) = w.transit("POST", "/v1/transit/encrypt/d", Some(&admin), batch);
        assert_eq!(s, 400, "{v}");
        let r = &v["data"]["batch_results"];
        assert!(r[0]["error"] != json!(MISSING_CONTEXT) && r[0]["error"].is_string(), "{v}");
        assert_eq!((&r[1]["error"], &r[1]["reference"]), (&json!(MISSING_CONTEXT), &json!("r")));
        assert!(r[1].get("ciphertext").is_none(), "{v}");
        for (path, body) in [
            ("/v1/transit/decrypt/d", json!({"ciphertext": ct})),
            ("/v1/transit/rewrap/d", json!({"ciphertext": ct})),
            ("/v1/transit/datakey/plaintext/d", json!({})),
        ] {
            let (s, v) = w.transit("POST", path, Some(&admin), body);
            assert_eq!((s, v), (400, json!({"errors": [MISSING_CONTEXT]})), "{path}");
        }
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/decrypt/d",
            Some(&admin),
            json!({"ciphertext": ct, "context": "Yw=="}),
        );
        assert_eq!((s, &v["data"]["plaintext"]), (200, &json!("eA==")), "{v}");
        // hmac takes no context, on a derived key too
        assert_eq!(w.transit("POST", "/v1/transit/hmac/d", Some(&admin), json!({"input": "eA=="})).0, 200);
        // a key that does not require one encrypts without
        assert_eq!(w.transit("POST", "/v1/transit/encrypt/p", Some(&admin), pt).0, 200);
    }

    #[test]
    fn trim_destroys_the_versions_below_with_transits_rules() {
        let mut w = world();
        let admin = bare(&token("acme", &["admin"]));
        assert_eq!(w.transit("POST", "/v1/transit/keys/k", Some(&admin), json!({})).0, 200);
        let (_, v) = w.transit("POST", "/v1/transit/encrypt/k", Some(&admin), json!({"plaintext": "eA=="}));
        let ct1 = v["data"]["ciphertext"].clone();
        for _ in 0..3 {
            assert_eq!(w.transit("POST", "/v1/transit/keys/k/rotate", Some(&admin), Value::Null).0, 200);
        }
        let config = |min_dec: u32, min_enc: u32| json!({"min_decryption_version": min_dec, "min_encryption_version": min_enc});
        let (s, v) = w.transit("POST", "/v1/transit/keys/k/config", Some(&admin), config(3, 2));
        assert_eq!(s, 400, "{v}");
        let (s, v) = w.transit("POST", "/v1/transit/keys/k/config", Some(&admin), config(1, 5));
        assert_eq!(s, 400, "{v}");
        let (s, v) = w.transit("POST", "/v1/transit/keys/k/config", Some(&admin), config(3, 4));
        assert_eq!((s, &v["data"]["min_encryption_version"]), (200, &json!(0)), "{v}");
        let trim =
            |w: &mut World, body: Value| w.transit("POST", "/v1/transit/keys/k/trim", Some(&admin), body);
        let refused = |m: &str| (400, json!({"errors": [m]}));
        assert_eq!(trim(&mut w, json!({})), refused("missing min_available_version"));
        assert_eq!(
            trim(&mut w, json!({"min_available_version": 0})),
            refused("minimum available version should be positive")
        );
        assert_eq!(
            trim(&mut w, json!({"min_available_version": 4})),
            refused("minimum available version cannot be greater than minimum decryption version")
        );
        let (s, v) = trim(&mut w, json!({"min_available_version": "3"}));
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            (&v["data"]["min_available_version"], &v["data"]["keys"].as_object().map(|k| k.len())),
            (&json!(3), &Some(2))
        );
        assert_eq!(
            trim(&mut w, json!({"min_available_version": 2})),
            refused("minimum available version cannot be decremented")
        );
        assert_eq!(
            trim(&mut w, json!({"min_available_version": 3})).0,
            200,
            "the same again changes nothing"
        );
        let (s, v) = w.transit(
            "POST",
            "/v1/transit/keys/k/config",
            Some(&admin),
            json!({"min_decryption_version": 2}),
        );
        assert_eq!((s, v), refused("min decryption version should not be less then min available version"));
        let (s, _) = w.transit("POST", "/v1/transit/decrypt/k", Some(&admin), json!({"ciphertext": ct1}));
        assert_eq!(s, 400);
        let (s, v) = w.call("GET", "/v1/schemes/k/versions", Some(&token("acme", &["admin"])), Value::Null);
        assert_eq!(s, 200, "{v}");
        let states: Vec<Value> =
            v["versions"].as_array().expect("versions").iter().map(|x| x["state"].clone()).collect();
        assert_eq!(states, [json!("destroyed"), json!("destroyed"), json!("active"), json!("active")]);
        // only an administrator of the key trims it
        let app = bare(&token("acme", &["app"]));
        assert_eq!(
            w.transit("POST", "/v1/transit/keys/k/trim", Some(&app), json!({"min_available_version": 3})).0,
            403
        );
    }

    #[test]
    fn the_mount_moves_and_turns_off() {
        let mut w = world_with(MapVars::default().with("transit_mount", "/crypto/"));
        let admin = bare(&token("acme", &["admin"]));
        assert_eq!(w.transit("POST", "/crypto/keys/k", Some(&admin), json!({})).0, 200);
        let (s, v) = w.call("POST", "/v1/transit/keys/k", Some(&token("acme", &["admin"])), json!({}));
        assert_eq!((s, v["error"]["code"].clone()), (404, json!("not_found")));
        let mut w = world_with(MapVars::default().with("transit_mount", "off"));
        let (s, _) = w.call("POST", "/v1/transit/keys/k", Some(&token("acme", &["admin"])), json!({}));
        assert_eq!(s, 404);
        for bad in ["/", "v1/transit/", "/v1/transit", "/v1//x/", "/v1/../x/", "/v1/tr ansit/"] {
            let vars = MapVars::default().with("transit_mount", bad).with("dev_mode", "true");
            let c = Config::load(&vars.with("jwt_audience", "").with("jwt_issuer", ""));
            assert!(c.is_err(), "{bad}");
        }
    }
}
