//! The store against a real SQLite database (rusqlite, natively), through the same SQL seam.

use super::sql::{dollar_to_question, Dialect, SqlConn, SqlError, SqlValue};
use super::*;
use crate::scheme::mask::MaskRule;

pub(crate) struct Lite(pub rusqlite::Connection);

impl Lite {
    pub fn memory() -> Self {
        Lite(rusqlite::Connection::open_in_memory().expect("sqlite"))
    }
}

fn to_sql(v: &SqlValue) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        SqlValue::Null => Value::Null,
        SqlValue::Int(i) => Value::Integer(*i),
        SqlValue::Text(s) => Value::Text(s.clone()),
        SqlValue::Blob(b) => Value::Blob(b.clone()),
    }
}

fn classify(e: rusqlite::Error) -> SqlError {
    let m = e.to_string();
    if m.contains("no such table") || m.contains("no such column") {
        SqlError::SchemaMissing(m)
    } else if m.contains("constraint failed") {
        SqlError::Constraint(m)
    } else {
        SqlError::Other(m)
    }
}

impl SqlConn for Lite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        let mut stmt = self.0.prepare(&dollar_to_question(sql)).map_err(classify)?;
        let n = stmt.column_count();
        let params: Vec<_> = params.iter().map(to_sql).collect();
        let mut rows = stmt.query(rusqlite::params_from_iter(params)).map_err(classify)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(classify)? {
            let mut vals = Vec::with_capacity(n);
            for i in 0..n {
                use rusqlite::types::ValueRef;
                vals.push(match row.get_ref(i).map_err(classify)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(v) => SqlValue::Int(v),
                    ValueRef::Real(v) => SqlValue::Text(v.to_string()),
                    ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into()),
                    ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
                });
            }
            out.push(vals);
        }
        Ok(out)
    }
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        self.query(sql, params)?;
        Ok(self.0.changes())
    }
}

fn scheme(name: &str) -> Scheme {
    Scheme {
        tenant: TenantId::parse("acme").expect("tenant"),
        name: SchemeName::parse(name).expect("name"),
        algorithm: Algorithm::Aes256Gcm,
        kek: KekRef::Local,
        policy: Policy { protect: vec!["app".into()], ..Policy::default() },
        mask: MaskRule::KeepLast { n: 4, char: '*' },
        current_version: KeyVersion::FIRST,
        min_decryption_version: KeyVersion::FIRST,
        rotation_period: None,
        mask_on_deny: false,
        context_required: false,
        created_at: 1_700_000_000,
        erased_at: None,
        audit: crate::scheme::AuditMode::All,
    }
}

fn v(n: u32) -> KeyVersion {
    KeyVersion::new(n).expect("version")
}

/// A scheme `pii` with versions 1..=n (version k wrapped as `wrapped(k)`).
fn scheme_with_versions(store: &Store<'_>, n: u32) -> Scheme {
    let s = scheme("pii");
    store.create_scheme(&s, &wrapped(1), 10).expect("create");
    for k in 2..=n {
        store
            .add_key_version(
                &s.tenant,
                &s.name,
                v(k - 1),
                &wrapped(k as u8),
                &KekRef::Local,
                10 + i64::from(k),
            )
            .expect("rotate");
    }
    s
}

fn states(store: &Store<'_>, s: &Scheme) -> Vec<(u32, KeyState)> {
    let (_, versions) = store.list_key_versions(&s.tenant, &s.name).expect("list").expect("some");
    versions.iter().map(|r| (r.key.version.get(), r.key.state)).collect()
}

fn min_of(store: &Store<'_>, s: &Scheme) -> u32 {
    store.get_scheme(&s.tenant, &s.name).expect("get").expect("some").min_decryption_version.get()
}

fn set_min(store: &Store<'_>, s: &Scheme, n: u32, now: i64) -> ChangeOutcome {
    let change = SchemeChange { min_decryption_version: Some(v(n)), ..Default::default() };
    store.update_scheme(&s.tenant, &s.name, &change, now).expect("update")
}

fn min_decryption_version_retires_and_reactivates(db: &dyn SqlConn) {
    use KeyState::{Active, Retired};
    let store = Store::new(db);
    let s = scheme_with_versions(&store, 3);
    assert_eq!(states(&store, &s), [(1, Active), (2, Active), (3, Active)]);
    let ChangeOutcome::Changed(got) = set_min(&store, &s, 3, 50) else { panic!("refused") };
    assert_eq!((got.min_decryption_version, got.current_version), (v(3), v(3)));
    assert_eq!(states(&store, &s), [(1, Retired), (2, Retired), (3, Active)]);
    // above the current version: refused, nothing changed
    assert_eq!(set_min(&store, &s, 4, 51), ChangeOutcome::AboveCurrent(v(3)));
    assert_eq!(min_of(&store, &s), 3);
    // lowering re-activates
    assert!(matches!(set_min(&store, &s, 2, 52), ChangeOutcome::Changed(_)));
    assert_eq!(states(&store, &s), [(1, Retired), (2, Active), (3, Active)]);
    assert!(matches!(set_min(&store, &s, 1, 53), ChangeOutcome::Changed(_)));
    assert_eq!(states(&store, &s), [(1, Active), (2, Active), (3, Active)]);
    let unknown = SchemeName::parse("nope").expect("name");
    let change = SchemeChange { min_decryption_version: Some(v(1)), ..Default::default() };
    assert_eq!(
        store.update_scheme(&s.tenant, &unknown, &change, 1).expect("update"),
        ChangeOutcome::SchemeNotFound
    );
}

fn rotation_period_is_stored_and_removable(db: &dyn SqlConn) {
    let store = Store::new(db);
    let mut s = scheme("pii");
    s.rotation_period = RotationPeriod::from_secs(2_592_000);
    store.create_scheme(&s, &wrapped(1), s.created_at).expect("create");
    assert_eq!(store.get_scheme(&s.tenant, &s.name).expect("get"), Some(s.clone()));
    let (got, key) = store.get_scheme_with_current_key(&s.tenant, &s.name).expect("get").expect("some");
    assert_eq!(got.rotation_period, s.rotation_period);
    assert_eq!(key.expect("key").created_at, s.created_at, "the current version's age is read with it");
    let clear = SchemeChange { rotation_period: Some(None), ..Default::default() };
    let ChangeOutcome::Changed(got) = store.update_scheme(&s.tenant, &s.name, &clear, 2).expect("u") else {
        panic!("refused")
    };
    assert_eq!(got.rotation_period, None);
    let set = SchemeChange { rotation_period: Some(RotationPeriod::from_secs(60)), ..Default::default() };
    store.update_scheme(&s.tenant, &s.name, &set, 3).expect("update");
    let got = store.get_scheme(&s.tenant, &s.name).expect("get").expect("some");
    assert_eq!(got.rotation_period.map(RotationPeriod::secs), Some(60));
}

/// Every forbidden transition of a version, and the one allowed: retired → destroyed.
fn only_retired_versions_are_destroyed(db: &dyn SqlConn) {
    use KeyState::{Active, Destroyed, Retired};
    let store = Store::new(db);
    let s = scheme_with_versions(&store, 3);
    let destroy = |n: u32| store.destroy_key_version(&s.tenant, &s.name, v(n), "alice", 70).expect("destroy");
    assert_eq!(destroy(1), DestroyOutcome::Active, "active (min 1)");
    assert_eq!(destroy(3), DestroyOutcome::Active, "current");
    assert_eq!(destroy(4), DestroyOutcome::VersionNotFound);
    let unknown = SchemeName::parse("nope").expect("name");
    assert_eq!(
        store.destroy_key_version(&s.tenant, &unknown, v(1), "alice", 70).expect("d"),
        DestroyOutcome::SchemeNotFound
    );
    assert!(matches!(set_min(&store, &s, 3, 60), ChangeOutcome::Changed(_)));
    assert_eq!(destroy(3), DestroyOutcome::Active, "the current version, even at the minimum");
    assert_eq!(destroy(1), DestroyOutcome::Destroyed);
    assert_eq!(destroy(1), DestroyOutcome::AlreadyDestroyed);
    assert_eq!(states(&store, &s), [(1, Destroyed), (2, Retired), (3, Active)]);
    let (_, versions) = store.list_key_versions(&s.tenant, &s.name).expect("list").expect("some");
    let gone = &versions[0];
    assert_eq!(
        (gone.key.wrapped.blob.len(), gone.destroyed_at, gone.destroyed_by.as_deref()),
        (0, Some(70), Some("alice"))
    );
    assert_eq!((versions[1].key.wrapped.clone(), versions[1].destroyed_at), (wrapped(2), None));
    // a minimum at or below a destroyed version would re-activate it: refused, nothing changed
    assert_eq!(set_min(&store, &s, 1, 80), ChangeOutcome::Destroyed(v(1)));
    assert_eq!(min_of(&store, &s), 3);
    assert_eq!(states(&store, &s), [(1, Destroyed), (2, Retired), (3, Active)]);
    // lowering to just above it re-activates version 2 only
    assert!(matches!(set_min(&store, &s, 2, 81), ChangeOutcome::Changed(_)));
    assert_eq!(states(&store, &s), [(1, Destroyed), (2, Active), (3, Active)]);
    assert_eq!(destroy(2), DestroyOutcome::Active);
    let k = store.data_key(&s.tenant, &s.name, v(1)).expect("key").expect("row kept");
    assert_eq!((k.state, k.wrapped.blob.len()), (Destroyed, 0));
}

/// Erasing a scheme or a tenant destroys every remaining version, whatever its state.
fn destroy_all_key_versions_of_a_scheme_or_tenant(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme_with_versions(&store, 2);
    let other = scheme("other");
    store.create_scheme(&other, &wrapped(7), 1).expect("create");
    let elsewhere = Scheme { tenant: TenantId::parse("else").expect("t"), ..scheme("pii") };
    store.create_scheme(&elsewhere, &wrapped(8), 1).expect("create");
    let slots = store.destroy_all_key_versions(&s.tenant, Some(&s.name), "erasure", 90).expect("destroy");
    assert_eq!(slots, vec![(s.name.clone(), v(1)), (s.name.clone(), v(2))]);
    assert_eq!(
        store.destroy_all_key_versions(&s.tenant, Some(&s.name), "erasure", 91).expect("again"),
        vec![]
    );
    let slots = store.destroy_all_key_versions(&s.tenant, None, "erasure", 92).expect("tenant");
    assert_eq!(slots, vec![(other.name.clone(), v(1))]);
    let rows = db
        .query("SELECT tenant, scheme, version, wrapped_dek, state FROM data_keys ORDER BY tenant, scheme, version", &[])
        .expect("rows");
    let text = |t: &str| SqlValue::Text(t.into());
    assert_eq!(
        rows,
        vec![
            vec![text("acme"), text("other"), SqlValue::Int(1), SqlValue::Blob(vec![]), text("destroyed")],
            vec![text("acme"), text("pii"), SqlValue::Int(1), SqlValue::Blob(vec![]), text("destroyed")],
            vec![text("acme"), text("pii"), SqlValue::Int(2), SqlValue::Blob(vec![]), text("destroyed")],
            vec![text("else"), text("pii"), SqlValue::Int(1), SqlValue::Blob(vec![8; 60]), text("active")],
        ]
    );
}

fn scheme_and_tenant_erasure_is_one_transaction_and_idempotent(db: &dyn SqlConn) {
    use crate::store::{ScopeErased, ScopeErasure};
    let store = Store::new(db);
    let s = scheme_with_versions(&store, 2);
    let other = scheme("other");
    store.create_scheme(&other, &wrapped(7), 1).expect("create");
    let elsewhere = Scheme { tenant: TenantId::parse("else").expect("t"), ..scheme("pii") };
    store.create_scheme(&elsewhere, &wrapped(8), 1).expect("create");
    let made = std::cell::Cell::new(0);
    let make = |done: &ScopeErased| {
        made.set(made.get() + 1);
        let listed: Vec<String> = done
            .versions
            .iter()
            .map(|(n, vs)| format!("{n}:{:?}", vs.iter().map(|v| v.get()).collect::<Vec<_>>()))
            .collect();
        (format!("{:032x}", made.get()), format!("{listed:?} {:?}", done.subject_secrets_deleted))
    };
    let cert = |o: ScopeErasure| match o {
        ScopeErasure::Erased { certificate, destroyed } => (certificate, destroyed.len()),
        ScopeErasure::SchemeNotFound => panic!("not found"),
    };
    let missing = SchemeName::parse("nope").expect("name");
    assert_eq!(store.erase_scheme(&s.tenant, &missing, "me", 90, &make), Ok(ScopeErasure::SchemeNotFound));
    let first = cert(store.erase_scheme(&s.tenant, &s.name, "me", 90, &make).expect("erase"));
    assert_eq!(first, ("[\"pii:[1, 2]\"] None".to_owned(), 2));
    assert_eq!(
        cert(store.erase_scheme(&s.tenant, &s.name, "me", 91, &make).expect("again")),
        (first.0.clone(), 0)
    );
    assert_eq!(made.get(), 1, "a repeated erase makes no certificate");
    let erased = store.get_scheme(&s.tenant, &s.name).expect("get").expect("kept");
    assert_eq!((erased.erased_at, erased.current_version), (Some(90), v(2)));
    // An erased scheme rotates no more.
    assert_eq!(
        store.add_key_version(&s.tenant, &s.name, v(2), &wrapped(9), &KekRef::Local, 92),
        Err(StoreError::Conflict)
    );
    // A new scheme of the name takes the row over, above the erased versions, exactly once.
    let fresh = Scheme { current_version: v(3), min_decryption_version: v(3), ..scheme("pii") };
    store.recreate_erased_scheme(&fresh, v(2), &wrapped(3), 93).expect("recreate");
    assert_eq!(store.recreate_erased_scheme(&fresh, v(2), &wrapped(4), 93), Err(StoreError::Exists));
    let now = store.get_scheme(&s.tenant, &s.name).expect("get").expect("there");
    assert_eq!((now.erased_at, now.current_version, now.min_decryption_version), (None, v(3), v(3)));
    assert_eq!(
        store.data_key(&s.tenant, &s.name, v(3)).expect("key").map(|k| k.wrapped.blob),
        Some(vec![3; 60])
    );

    // The tenant: every scheme, every subject secret; nothing of another tenant.
    let digest = crate::subjects::SubjectDigest([1; 32]);
    let secret = crate::crypto::secret::SecretKey::from_bytes([2; 32]);
    store.subject_secret_or_create(&s.tenant, &digest, secret, 94).expect("subject");
    let t = cert(store.erase_tenant(&s.tenant, "me", 95, &make).expect("tenant"));
    assert_eq!(t, ("[\"other:[1]\", \"pii:[1, 2, 3]\"] Some(1)".to_owned(), 2));
    assert!(store.subject_secret(&s.tenant, &digest).expect("read").is_none());
    assert_eq!(cert(store.erase_tenant(&s.tenant, "me", 96, &make).expect("again")), (t.0.clone(), 0));
    assert_eq!(cert(store.erase_scheme(&s.tenant, &other.name, "me", 96, &make).expect("scheme")).0, t.0);
    assert_eq!(made.get(), 2, "one scheme and one tenant certificate");
    let live = db
        .query(
            "SELECT tenant, scheme, version FROM data_keys WHERE state <> 'destroyed' ORDER BY tenant",
            &[],
        )
        .expect("rows");
    assert_eq!(
        live,
        vec![vec![SqlValue::Text("else".into()), SqlValue::Text("pii".into()), SqlValue::Int(1)]]
    );
    let stored = db.query("SELECT scope FROM erasures ORDER BY erased_at", &[]).expect("erasures");
    assert_eq!(stored, vec![vec![SqlValue::Text("scheme".into())], vec![SqlValue::Text("tenant".into())]]);
}

fn wrapped(tag: u8) -> WrappedDek {
    WrappedDek { blob: vec![tag; 60], kek_id: "local".into(), kek_version: "abcd".into() }
}

fn migrates_on_first_use_and_only_once(db: &dyn SqlConn) {
    let store = Store::new(db);
    let t = TenantId::parse("acme").expect("tenant");
    assert_eq!(store.list_schemes(&t).expect("list"), vec![]);
    assert_eq!(migrate::migrate(db).expect("again"), 0);
}

fn scheme_round_trip_and_duplicates(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme("pii");
    store.create_scheme(&s, &wrapped(1), 1_700_000_000).expect("create");
    assert_eq!(store.get_scheme(&s.tenant, &s.name).expect("get"), Some(s.clone()));
    assert_eq!(store.create_scheme(&s, &wrapped(2), 1).err(), Some(StoreError::Exists));
    // the failed create wrote nothing: version 1 still holds the first key
    let k = store.data_key(&s.tenant, &s.name, KeyVersion::FIRST).expect("key").expect("some");
    assert_eq!(k.wrapped, wrapped(1));
    assert_eq!(k.state, KeyState::Active);
    let other = TenantId::parse("other").expect("tenant");
    assert_eq!(store.get_scheme(&other, &s.name).expect("get"), None);
}

fn rotation_is_compare_and_set(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme("pii");
    store.create_scheme(&s, &wrapped(1), 1).expect("create");
    let v2 = store
        .add_key_version(&s.tenant, &s.name, KeyVersion::FIRST, &wrapped(2), &KekRef::Local, 2)
        .expect("rotate");
    assert_eq!(v2.get(), 2);
    // a second writer that still believes version 1 is current loses, and writes nothing
    assert_eq!(
        store.add_key_version(&s.tenant, &s.name, KeyVersion::FIRST, &wrapped(9), &KekRef::Local, 3).err(),
        Some(StoreError::Conflict)
    );
    let got = store.get_scheme(&s.tenant, &s.name).expect("get").expect("some");
    assert_eq!(got.current_version, v2);
    assert_eq!(store.data_key(&s.tenant, &s.name, v2).expect("k").expect("some").wrapped, wrapped(2));
    let v3 = KeyVersion::new(3).expect("v");
    assert!(store.data_key(&s.tenant, &s.name, v3).expect("k").is_none());
}

/// The protect path's one query returns the same scheme and current key as the two reads.
fn scheme_with_current_key_follows_rotation(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme("pii");
    assert!(store.get_scheme_with_current_key(&s.tenant, &s.name).expect("get").is_none(), "no scheme yet");
    store.create_scheme(&s, &wrapped(1), 1).expect("create");
    for (tag, version) in [(1u8, 1u32), (2, 2), (3, 3)] {
        if version > 1 {
            let prev = KeyVersion::new(version - 1).expect("v");
            store
                .add_key_version(&s.tenant, &s.name, prev, &wrapped(tag), &KekRef::Local, 2)
                .expect("rotate");
        }
        let (got, key) = store.get_scheme_with_current_key(&s.tenant, &s.name).expect("get").expect("some");
        assert_eq!(Some(got.clone()), store.get_scheme(&s.tenant, &s.name).expect("get"));
        assert_eq!(got.current_version.get(), version);
        let key = key.expect("the current key");
        assert_eq!((key.version.get(), key.wrapped, key.state), (version, wrapped(tag), KeyState::Active));
    }
    for version in 1..=4u32 {
        let v = KeyVersion::new(version).expect("v");
        let (got, key) = store.get_scheme_with_key(&s.tenant, &s.name, v).expect("get").expect("some");
        assert_eq!(got.current_version.get(), 3);
        match key {
            Some(k) => assert_eq!((k.version, k.wrapped), (v, wrapped(version as u8))),
            None => assert_eq!(version, 4, "versions 1-3 exist"),
        }
    }
    let other = TenantId::parse("other").expect("tenant");
    assert!(store.get_scheme_with_current_key(&other, &s.name).expect("get").is_none());
    assert!(store.get_scheme_with_key(&other, &s.name, KeyVersion::FIRST).expect("get").is_none());
}

fn list_is_sorted_and_per_tenant(db: &dyn SqlConn) {
    let store = Store::new(db);
    for n in ["zeta", "alpha", "mid"] {
        store.create_scheme(&scheme(n), &wrapped(1), 1).expect("create");
    }
    let names: Vec<String> = store
        .list_schemes(&TenantId::parse("acme").expect("t"))
        .expect("list")
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
}

/// A database migrated by a newer build is refused by every read and write, before anything is
/// written, and also on the migration path (tables missing, newer version recorded).
fn a_newer_schema_is_refused_everywhere(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme("pii");
    store.create_scheme(&s, &wrapped(1), 1).expect("create");
    let newer = migrate::latest() + 1;
    db.execute(
        "INSERT INTO veil_migrations (version, name, applied_at) VALUES ($1, 'from the future', 0)",
        &[SqlValue::Int(newer)],
    )
    .expect("record a newer version");
    let too_new = Some(StoreError::SchemaTooNew { found: newer, known: migrate::latest() });
    let v1 = KeyVersion::FIRST;
    let other = TenantId::parse("other").expect("tenant");
    assert_eq!(store.get_scheme(&s.tenant, &s.name).err(), too_new);
    assert_eq!(store.get_scheme(&other, &s.name).err(), too_new, "no row: checked on its own");
    assert_eq!(store.get_scheme_with_current_key(&s.tenant, &s.name).err(), too_new);
    assert_eq!(store.get_scheme_with_key(&other, &s.name, v1).err(), too_new);
    assert_eq!(store.list_schemes(&s.tenant).err(), too_new);
    assert_eq!(store.list_schemes(&other).err(), too_new);
    assert_eq!(store.data_key(&s.tenant, &s.name, v1).err(), too_new);
    assert_eq!(store.create_scheme(&scheme("new"), &wrapped(2), 2).err(), too_new);
    assert_eq!(store.add_key_version(&s.tenant, &s.name, v1, &wrapped(3), &KekRef::Local, 3).err(), too_new);
    assert_eq!(store.reserve_seals(&s.tenant, &s.name, v1, 1).err(), too_new);
    assert_eq!(store.seals(&s.tenant, &s.name, v1).err(), too_new);
    let rows = db.query("SELECT seals FROM key_seals", &[]).expect("rows");
    assert!(rows.is_empty(), "no seal count was written: {rows:?}");
    // nothing was written
    let rows = db.query("SELECT name FROM schemes", &[]).expect("rows");
    assert_eq!(rows, vec![vec![SqlValue::Text("pii".into())]]);
    let rows = db.query("SELECT version FROM data_keys", &[]).expect("rows");
    assert_eq!(rows, vec![vec![SqlValue::Int(1)]]);
    // the migration path: the tables gone, the newer version still recorded
    for table in ["data_keys", "schemes", "tenants"] {
        db.execute(&format!("DROP TABLE {table}"), &[]).expect("drop");
    }
    assert_eq!(store.list_schemes(&s.tenant).err(), too_new);
    assert_eq!(store.create_scheme(&s, &wrapped(1), 1).err(), too_new);
    assert!(db.query("SELECT 1 FROM schemes", &[]).is_err(), "the migrations did not run");
}

/// Seal counts (issue 19 item 6): per version, starting at 0, each reservation returning the new
/// total; a database from before migration 5 gets the table on first use.
fn seal_counts_only_grow_per_version(db: &dyn SqlConn) {
    let store = Store::new(db);
    let s = scheme("pii");
    store.create_scheme(&s, &wrapped(1), 1).expect("create");
    let (v1, v2) = (KeyVersion::FIRST, KeyVersion::new(2).expect("v2"));
    assert_eq!(store.seals(&s.tenant, &s.name, v1), Ok(0));
    assert_eq!(store.reserve_seals(&s.tenant, &s.name, v1, 3), Ok(3));
    assert_eq!(store.reserve_seals(&s.tenant, &s.name, v1, 1000), Ok(1003));
    assert_eq!(store.reserve_seals(&s.tenant, &s.name, v2, 1), Ok(1));
    assert_eq!(store.seals(&s.tenant, &s.name, v1), Ok(1003));
    assert_eq!(store.seals(&s.tenant, &s.name, v2), Ok(1));
    let other = TenantId::parse("other").expect("tenant");
    assert_eq!(store.seals(&other, &s.name, v1), Ok(0));
    let big = (1u64 << 48) + 7;
    assert_eq!(store.reserve_seals(&other, &s.name, v1, big), Ok(big), "64-bit counts");
    // an older database: no key_seals table, migration 5 not recorded
    db.execute("DROP TABLE key_seals", &[]).expect("drop");
    db.execute("DELETE FROM veil_migrations WHERE version = 5", &[]).expect("forget");
    assert_eq!(store.reserve_seals(&s.tenant, &s.name, v1, 2), Ok(2), "migrated on first use");
    let rows = db.query("SELECT version FROM veil_migrations WHERE version = 5", &[]).expect("rows");
    assert_eq!(rows.len(), 1);
}

/// API keys (migration 8): created once per id, found by id with their hash, listed per tenant,
/// revoked only in their own tenant (first `revoked_at` kept), `last_used_at` written at most once
/// a minute; and a scheme's `mask_on_deny` stored and changed.
fn api_keys_and_mask_on_deny(db: &dyn SqlConn) {
    let store = Store::new(db);
    let t = TenantId::parse("t1").expect("tenant");
    let other = TenantId::parse("t2").expect("tenant");
    let rec = ApiKeyRecord {
        id: "0123456789abcdef0123456789abcdef".into(),
        tenant: t.clone(),
        label: "cron".into(),
        roles: ["app".to_string()].into_iter().collect(),
        created_at: 100,
        expires_at: Some(1000),
        revoked_at: None,
        last_used_at: None,
    };
    store.create_api_key(&rec, &[7; 32]).expect("create");
    assert_eq!(store.create_api_key(&rec, &[8; 32]), Err(StoreError::Exists));
    let found = store.api_key_for_auth(&rec.id).expect("read").expect("found");
    assert_eq!((found.record.clone(), found.secret_sha256), (rec.clone(), [7; 32]));
    assert!(store.api_key_for_auth("ffffffffffffffffffffffffffffffff").expect("read").is_none());
    assert_eq!(store.list_api_keys(&t).expect("list"), vec![rec.clone()]);
    assert_eq!(store.list_api_keys(&other).expect("list"), vec![]);
    store.touch_api_key(&rec.id, 200).expect("touch");
    store.touch_api_key(&rec.id, 259).expect("touch within a minute");
    assert_eq!(store.list_api_keys(&t).expect("list")[0].last_used_at, Some(200));
    store.touch_api_key(&rec.id, 260).expect("touch a minute later");
    assert_eq!(store.list_api_keys(&t).expect("list")[0].last_used_at, Some(260));
    assert_eq!(store.revoke_api_key(&other, &rec.id, 300), Ok(None), "another tenant's key");
    let revoked = store.revoke_api_key(&t, &rec.id, 300).expect("revoke").expect("found");
    assert_eq!(revoked.revoked_at, Some(300));
    let again = store.revoke_api_key(&t, &rec.id, 400).expect("revoke").expect("found");
    assert_eq!(again.revoked_at, Some(300), "the first revocation stands");

    let mut s = scheme("pii");
    s.mask_on_deny = true;
    store.create_scheme(&s, &wrapped(1), 1).expect("create");
    assert!(store.get_scheme(&s.tenant, &s.name).expect("get").expect("found").mask_on_deny);
    let off = SchemeChange { mask_on_deny: Some(false), ..Default::default() };
    let ChangeOutcome::Changed(changed) = store.update_scheme(&s.tenant, &s.name, &off, 2).expect("update")
    else {
        panic!("not changed")
    };
    assert!(!changed.mask_on_deny);
    let (with_key, _) = store.get_scheme_with_current_key(&s.tenant, &s.name).expect("read").expect("found");
    assert!(!with_key.mask_on_deny);
}

/// Migration 10: a database at version 9 (no `context_required` column) is migrated on first use
/// and keeps its schemes, which read as `context_required: false`; the flag is stored when set.
fn context_required_is_added_and_stored(db: &dyn SqlConn) {
    let store = Store::new(db);
    scheme_with_versions(&store, 2);
    let old = store.get_scheme(&scheme("pii").tenant, &scheme("pii").name).expect("get").expect("found");
    // back to version 9: the column gone, the migration not recorded
    db.execute("ALTER TABLE schemes DROP COLUMN context_required", &[]).expect("drop");
    db.execute("DELETE FROM veil_migrations WHERE version = 10", &[]).expect("forget");
    let read = store.get_scheme(&old.tenant, &old.name).expect("migrated on first use").expect("found");
    assert_eq!(read.current_version, v(2));
    assert_eq!(read, old);
    let rows = db.query("SELECT version FROM veil_migrations WHERE version = 10", &[]).expect("rows");
    assert_eq!(rows.len(), 1);
    let mut d = scheme("derived");
    d.context_required = true;
    store.create_scheme(&d, &wrapped(1), 1).expect("create");
    assert!(store.get_scheme(&d.tenant, &d.name).expect("get").expect("found").context_required);
    let (with_key, key) =
        store.get_scheme_with_current_key(&d.tenant, &d.name).expect("read").expect("found");
    assert!(with_key.context_required && key.is_some());
    assert!(!store.get_scheme(&old.tenant, &old.name).expect("get").expect("found").context_required);
}

/// A PostgreSQL connection in a schema of its own, dropped afterwards. The server is
/// `VEIL_TEST_PG_URL`, which scripts/test.sh sets (scripts/ensure-postgres.sh); unset or
/// unreachable, the tests fail rather than pass without having run.
pub(crate) struct Pg {
    client: std::cell::RefCell<postgres::Client>,
    schema: String,
}

impl Pg {
    pub fn connect() -> Pg {
        let url = std::env::var("VEIL_TEST_PG_URL")
            .expect("VEIL_TEST_PG_URL is not set: these tests need PostgreSQL (scripts/test.sh sets it)");
        let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap_or_else(|e| {
            panic!("PostgreSQL at {url} is needed for these tests (run scripts/test.sh): {e}")
        });
        let mut seed = [0u8; 8];
        getrandom::getrandom(&mut seed).expect("random");
        let schema = format!("veil_test_{}", u64::from_le_bytes(seed));
        client
            .batch_execute(&format!("CREATE SCHEMA {schema}; SET search_path TO {schema}"))
            .expect("schema");
        Pg { client: std::cell::RefCell::new(client), schema }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ =
            self.client.get_mut().batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
    }
}

#[derive(Debug)]
struct Param<'a>(&'a SqlValue);

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.0 {
            SqlValue::Null => Ok(postgres::types::IsNull::Yes),
            SqlValue::Int(i) => i.to_sql(ty, out),
            SqlValue::Text(t) => t.to_sql(ty, out),
            SqlValue::Blob(b) => b.to_sql(ty, out),
        }
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

fn pg_error(e: postgres::Error) -> SqlError {
    let m = e.to_string();
    match e.code().map(|c| c.code()) {
        Some("42P01" | "42703") => SqlError::SchemaMissing(m),
        Some(c) if c.starts_with("23") => SqlError::Constraint(m),
        _ => SqlError::Other(m),
    }
}

impl SqlConn for Pg {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn query(&self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, SqlError> {
        use postgres::types::Type;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
        let rows = self.client.borrow_mut().query(sql, &refs).map_err(pg_error)?;
        let mut out = Vec::new();
        for row in rows {
            let mut vals = Vec::new();
            for (i, col) in row.columns().iter().enumerate() {
                let ty = col.type_();
                let v = if *ty == Type::INT8 {
                    row.get::<_, Option<i64>>(i).map(SqlValue::Int)
                } else if *ty == Type::INT4 {
                    row.get::<_, Option<i32>>(i).map(|v| SqlValue::Int(v.into()))
                } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
                    row.get::<_, Option<String>>(i).map(SqlValue::Text)
                } else if *ty == Type::BYTEA {
                    row.get::<_, Option<Vec<u8>>>(i).map(SqlValue::Blob)
                } else {
                    None
                };
                vals.push(v.unwrap_or(SqlValue::Null));
            }
            out.push(vals);
        }
        Ok(out)
    }
    fn execute(&self, sql: &str, params: &[SqlValue]) -> Result<u64, SqlError> {
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect();
        self.client.borrow_mut().execute(sql, &refs).map_err(pg_error)
    }
}

/// Every contract test, once per store backend.
fn audit_chains_are_gapless_and_per_tenant(db: &dyn SqlConn) {
    let store = Store::new(db);
    let acme = TenantId::parse("acme").expect("tenant");
    let other = TenantId::parse("other").expect("tenant");
    assert_eq!(store.audit_head(&acme).expect("head"), 0);
    assert!(store.audit_rows(&acme, 0, 10).expect("rows").is_empty());
    let mut seen = Vec::new();
    for i in 0..3u8 {
        let n = store
            .append_audit(&acme, &mut |seq, prev| {
                seen.push((seq, *prev));
                vec![i; 40]
            })
            .expect("append");
        assert_eq!(n, u64::from(i) + 1);
    }
    assert_eq!(store.append_audit(&other, &mut |seq, _| vec![seq as u8; 40]).expect("append"), 1);
    let rows = store.audit_rows(&acme, 0, 10).expect("rows");
    assert_eq!(rows.iter().map(|r| r.sequence).collect::<Vec<_>>(), [1, 2, 3]);
    // each row's prev is the hash of the row before it (zeros before the first)
    assert_eq!(rows[0].prev, crate::audit::GENESIS.to_vec());
    assert_eq!(rows[1].prev, crate::audit::hash(&rows[0].sealed).to_vec());
    assert_eq!(rows[2].prev, crate::audit::hash(&rows[1].sealed).to_vec());
    assert_eq!(seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(store.audit_rows(&acme, 1, 1).expect("rows")[0].sequence, 2);
    assert_eq!(store.audit_head(&acme).expect("head"), 3);
    assert_eq!(store.audit_head(&other).expect("head"), 1);
}

/// Makes every insert into `audit_log` fail (the fault of an audit write that fails), or lifts it.
fn refuse_audit_inserts(db: &dyn SqlConn, on: bool) {
    let sql: &[&str] = match (db.dialect(), on) {
        (Dialect::Sqlite, true) => &["CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log \
                                      BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"],
        (Dialect::Sqlite, false) => &["DROP TRIGGER refuse_audit"],
        (Dialect::Postgres, true) => &[
            "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
            "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION refuse_audit()",
        ],
        (Dialect::Postgres, false) => &["DROP TRIGGER refuse_audit ON audit_log", "DROP FUNCTION refuse_audit()"],
    };
    for statement in sql {
        db.execute(statement, &[]).expect("trigger");
    }
}

/// With the request's transaction armed, an operation's writes are committed with its audit
/// entry or not at all (docs/audit.md, "One transaction").
fn writes_commit_with_the_audit_entry_or_not_at_all(db: &dyn SqlConn) {
    let store = Store::new(db);
    let acme = TenantId::parse("acme").expect("tenant");
    let name = |n: &str| SchemeName::parse(n).expect("name");
    let exists = |n: &str| store.get_scheme(&acme, &name(n)).expect("read").is_some();
    let mut entry = |_: u64, _: &[u8; 32]| vec![7u8; 40];

    // committed together: two write transactions (the second a savepoint) and the entry
    store.join_writes();
    store.create_scheme(&scheme("one"), &wrapped(1), 10).expect("create");
    store.add_key_version(&acme, &name("one"), v(1), &wrapped(2), &KekRef::Local, 11).expect("rotate");
    // a write that fails inside undoes only itself
    assert_eq!(store.create_scheme(&scheme("one"), &wrapped(3), 12), Err(StoreError::Exists));
    store.append_audit(&acme, &mut entry).expect("append");
    assert!(exists("one"));
    assert_eq!(store.get_scheme(&acme, &name("one")).expect("read").map(|s| s.current_version), Some(v(2)));
    assert_eq!(store.audit_head(&acme).expect("head"), 1);

    // the entry fails: nothing of the operation stays
    refuse_audit_inserts(db, true);
    store.join_writes();
    store.create_scheme(&scheme("two"), &wrapped(1), 20).expect("create");
    store.add_key_version(&acme, &name("one"), v(2), &wrapped(4), &KekRef::Local, 21).expect("rotate");
    assert!(store.append_audit(&acme, &mut entry).is_err());
    refuse_audit_inserts(db, false);
    assert!(!exists("two"));
    assert_eq!(store.get_scheme(&acme, &name("one")).expect("read").map(|s| s.current_version), Some(v(2)));
    assert_eq!(store.audit_head(&acme).expect("head"), 1);

    // no entry (a data operation on a scheme with audit none): committed on their own
    store.join_writes();
    store.create_scheme(&scheme("three"), &wrapped(1), 30).expect("create");
    store.finish_writes().expect("commit");
    assert!(exists("three"));
    store.join_writes();
    store.create_scheme(&scheme("four"), &wrapped(1), 40).expect("create");
    store.abandon_writes();
    assert!(!exists("four"));
    // a resumable operation commits as it goes and stays joined
    store.join_writes();
    store.create_scheme(&scheme("five"), &wrapped(1), 50).expect("create");
    store.commit_writes().expect("commit");
    store.create_scheme(&scheme("six"), &wrapped(1), 51).expect("create");
    store.abandon_writes();
    assert!(exists("five") && !exists("six"));
    // a request that wrote nothing appends its entry alone; not joined, writes commit at once
    store.join_writes();
    store.append_audit(&acme, &mut entry).expect("append");
    store.create_scheme(&scheme("seven"), &wrapped(1), 60).expect("create");
    store.abandon_writes();
    assert!(exists("seven"));
    assert_eq!(store.audit_head(&acme).expect("head"), 2);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite_contract {
            $( #[test] fn $name() { super::$name(&super::Lite::memory()); } )*
        }
        mod postgres_contract {
            $( #[test] fn $name() { super::$name(&super::Pg::connect()); } )*
        }
    };
}

contract!(
    migrates_on_first_use_and_only_once,
    scheme_round_trip_and_duplicates,
    rotation_is_compare_and_set,
    scheme_with_current_key_follows_rotation,
    list_is_sorted_and_per_tenant,
    a_newer_schema_is_refused_everywhere,
    min_decryption_version_retires_and_reactivates,
    rotation_period_is_stored_and_removable,
    only_retired_versions_are_destroyed,
    destroy_all_key_versions_of_a_scheme_or_tenant,
    scheme_and_tenant_erasure_is_one_transaction_and_idempotent,
    seal_counts_only_grow_per_version,
    audit_chains_are_gapless_and_per_tenant,
    api_keys_and_mask_on_deny,
    context_required_is_added_and_stored,
    writes_commit_with_the_audit_entry_or_not_at_all,
);
