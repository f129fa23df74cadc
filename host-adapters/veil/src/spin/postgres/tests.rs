//! Against the real PostgreSQL named by `VEIL_TEST_PG_URL` (scripts/test.sh sets it, from
//! scripts/ensure-postgres.sh), through the host functions themselves. Each test works in a
//! schema of its own and drops it. Without the variable, or with nothing answering there, the
//! tests fail: they never pass without having run.

use std::time::Duration;

use tokio::runtime::Runtime;
use wasmtime::component::{Resource, ResourceTable};

use super::*;
use crate::spin::bindings::spin::postgres::postgres::{DbDataType, DbValue, Interval};

fn pg_url() -> String {
    std::env::var("VEIL_TEST_PG_URL").unwrap_or_else(|_| {
        panic!("VEIL_TEST_PG_URL is not set: these tests need PostgreSQL (scripts/test.sh sets it)")
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A scratch schema, dropped (with everything in it) when the test ends, even by a panic.
struct Scratch<'r> {
    rt: &'r Runtime,
    admin: tokio_postgres::Client,
    schema: String,
}

impl<'r> Scratch<'r> {
    fn new(rt: &'r Runtime, name: &str) -> Self {
        let url = pg_url();
        let connected = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(&url, tokio_postgres::NoTls))
                .await
        });
        let (admin, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => panic!("no PostgreSQL at {url}: {}", chain(&e)),
            Err(_) => panic!("no PostgreSQL at {url}: no connection within 5 s"),
        };
        rt.spawn(connection);
        let schema = format!("veil_host_{name}_{}", std::process::id());
        rt.block_on(
            admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")),
        )
        .unwrap();
        Scratch { rt, admin, schema }
    }

    fn terminate(&self, pid: i32) {
        let row = self.rt.block_on(self.admin.query_one("SELECT pg_terminate_backend($1)", &[&pid])).unwrap();
        assert!(row.get::<_, bool>(0));
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = self
            .rt
            .block_on(self.admin.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema)));
    }
}

/// The host side of one store: pools, allow-list and resource table.
struct Host {
    pools: Pools,
    allowed: AllowedHosts,
    table: ResourceTable,
    statements: std::sync::atomic::AtomicU32,
}

impl Host {
    fn new(settings: PgSettings) -> Self {
        Host {
            pools: Pools::new(settings),
            allowed: AllowedHosts::parse(&["postgres://*:*"]).unwrap(),
            table: ResourceTable::new(),
            statements: Default::default(),
        }
    }

    fn view(&mut self) -> PgView<'_> {
        PgView {
            pools: &self.pools,
            allowed: &self.allowed,
            table: &mut self.table,
            statements: &self.statements,
        }
    }

    async fn open(&mut self) -> Result<Resource<Connection>, Error> {
        self.open_at(&pg_url()).await
    }

    async fn open_at(&mut self, url: &str) -> Result<Resource<Connection>, Error> {
        HostConnection::open(&mut self.view(), url.to_string()).await
    }

    async fn query(
        &mut self,
        c: &Resource<Connection>,
        sql: &str,
        params: Vec<ParameterValue>,
    ) -> Result<RowSet, Error> {
        let borrowed = Resource::new_borrow(c.rep());
        HostConnection::query(&mut self.view(), borrowed, sql.to_string(), params).await
    }

    async fn exec(
        &mut self,
        c: &Resource<Connection>,
        sql: &str,
        params: Vec<ParameterValue>,
    ) -> Result<u64, Error> {
        let borrowed = Resource::new_borrow(c.rep());
        HostConnection::execute(&mut self.view(), borrowed, sql.to_string(), params).await
    }

    async fn pid(&mut self, c: &Resource<Connection>) -> Result<i32, Error> {
        let set = self.query(c, "SELECT pg_backend_pid()", vec![]).await?;
        match set.rows.first().and_then(|r| r.first()) {
            Some(DbValue::Int32(pid)) => Ok(*pid),
            other => panic!("unexpected pid {other:?}"),
        }
    }

    fn close(&mut self, c: Resource<Connection>) {
        HostConnection::drop(&mut self.view(), c).unwrap();
    }
}

fn code(e: &Error) -> &str {
    match e {
        Error::QueryFailed(QueryError::DbError(db)) => &db.code,
        other => panic!("expected a db-error, got {other:?}"),
    }
}

#[test]
fn every_supported_type_round_trips() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "types");
    let s = scratch.schema.clone();
    rt.block_on(async {
        let mut host = Host::new(PgSettings::default());
        let c = host.open().await.unwrap();
        host.exec(
            &c,
            &format!(
                "CREATE TABLE {s}.t (b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, t text, \
                 v varchar(20), c char(3), by bytea, d date, tm time, ts timestamp, tz timestamptz, \
                 tz2 timestamptz, u uuid, j json, jb jsonb, num numeric, a4 int4[], a8 int8[], at text[], \
                 iv interval)"
            ),
            vec![],
        )
        .await
        .unwrap();
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let params = vec![
            ParameterValue::Boolean(true),
            ParameterValue::Int16(-2),
            ParameterValue::Int64(1 << 20),
            ParameterValue::Int32(-3),
            ParameterValue::Floating32(1.5),
            ParameterValue::Floating64(-2.25),
            ParameterValue::Str("héllo".into()),
            ParameterValue::Str("var".into()),
            ParameterValue::Str("abc".into()),
            ParameterValue::Binary(vec![0, 255, 1]),
            ParameterValue::Date((2024, 2, 29)),
            ParameterValue::Time((23, 59, 58, 123_456_000)),
            ParameterValue::Datetime((1999, 12, 31, 23, 59, 59, 999_999_000)),
            ParameterValue::Timestamp(1_700_000_000),
            ParameterValue::Datetime((2030, 1, 2, 3, 4, 5, 0)),
            ParameterValue::Uuid(id.into()),
            ParameterValue::Jsonb(b"{\"a\": 1}".to_vec()),
            ParameterValue::Str("{\"b\":[1,2]}".into()),
            ParameterValue::Decimal("-1234.5678".into()),
            ParameterValue::ArrayInt32(vec![Some(1), None]),
            ParameterValue::ArrayInt64(vec![Some(1 << 40)]),
            ParameterValue::ArrayStr(vec![Some("x".into()), None]),
            ParameterValue::Interval(Interval { micros: 1_500_000, days: 2, months: 3 }),
        ];
        let placeholders: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
        let insert = format!("INSERT INTO {s}.t VALUES ({})", placeholders.join(", "));
        assert_eq!(host.exec(&c, &insert, params.clone()).await.unwrap(), 1);
        let nulls = vec![ParameterValue::DbNull; params.len()];
        assert_eq!(host.exec(&c, &insert, nulls).await.unwrap(), 1);

        let set = host.query(&c, &format!("SELECT * FROM {s}.t ORDER BY b NULLS LAST"), vec![]).await.unwrap();
        let names: Vec<&str> = set.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names[..4], ["b", "i2", "i4", "i8"]);
        let types: Vec<String> = set.columns.iter().map(|c| format!("{:?}", c.data_type)).collect();
        let expected_types = [
            DbDataType::Boolean,
            DbDataType::Int16,
            DbDataType::Int32,
            DbDataType::Int64,
            DbDataType::Floating32,
            DbDataType::Floating64,
            DbDataType::Str,
            DbDataType::Str,
            DbDataType::Str,
            DbDataType::Binary,
            DbDataType::Date,
            DbDataType::Time,
            DbDataType::Datetime,
            DbDataType::Datetime,
            DbDataType::Datetime,
            DbDataType::Uuid,
            DbDataType::Jsonb,
            DbDataType::Jsonb,
            DbDataType::Decimal,
            DbDataType::ArrayInt32,
            DbDataType::ArrayInt64,
            DbDataType::ArrayStr,
            DbDataType::Interval,
        ];
        assert_eq!(types, expected_types.iter().map(|t| format!("{t:?}")).collect::<Vec<_>>());
        assert_eq!(set.rows.len(), 2);
        let row = &set.rows[0];
        let expected = format!(
            "{:?}",
            vec![
                DbValue::Boolean(true),
                DbValue::Int16(-2),
                DbValue::Int32(1 << 20),
                DbValue::Int64(-3),
                DbValue::Floating32(1.5),
                DbValue::Floating64(-2.25),
                DbValue::Str("héllo".into()),
                DbValue::Str("var".into()),
                DbValue::Str("abc".into()),
                DbValue::Binary(vec![0, 255, 1]),
                DbValue::Date((2024, 2, 29)),
                DbValue::Time((23, 59, 58, 123_456_000)),
                DbValue::Datetime((1999, 12, 31, 23, 59, 59, 999_999_000)),
                // 1_700_000_000 is 2023-11-14 22:13:20 UTC.
                DbValue::Datetime((2023, 11, 14, 22, 13, 20, 0)),
                DbValue::Datetime((2030, 1, 2, 3, 4, 5, 0)),
                DbValue::Uuid(id.into()),
                DbValue::Jsonb(b"{\"a\": 1}".to_vec()),
                DbValue::Jsonb(b"{\"b\": [1, 2]}".to_vec()),
                DbValue::Decimal("-1234.5678".into()),
                DbValue::ArrayInt32(vec![Some(1), None]),
                DbValue::ArrayInt64(vec![Some(1 << 40)]),
                DbValue::ArrayStr(vec![Some("x".into()), None]),
                DbValue::Interval(Interval { micros: 1_500_000, days: 2, months: 3 }),
            ]
        );
        assert_eq!(format!("{row:?}"), expected);
        assert!(set.rows[1].iter().all(|v| matches!(v, DbValue::DbNull)));

        // Odd result types: name → str, void → db-null, inet → unsupported, numeric aggregates.
        let set = host
            .query(
                &c,
                "SELECT 'pg'::name, pg_sleep(0), '10.0.0.1'::inet, sum(x), 0.000100::numeric, $1::int8 IS NULL \
                 FROM (VALUES (9223372036854775807::int8), (1)) v(x)",
                vec![ParameterValue::DbNull],
            )
            .await
            .unwrap();
        let row = &set.rows[0];
        assert!(matches!(&row[0], DbValue::Str(s) if s == "pg"));
        assert!(matches!(row[1], DbValue::DbNull));
        assert!(matches!(&row[2], DbValue::Unsupported(b) if !b.is_empty()));
        assert!(matches!(&row[3], DbValue::Decimal(d) if d == "9223372036854775808"), "{:?}", row[3]);
        assert!(matches!(&row[4], DbValue::Decimal(d) if d == "0.000100"), "{:?}", row[4]);
        assert!(matches!(row[5], DbValue::Boolean(true)));
        assert!(matches!(&set.columns[2].data_type, DbDataType::Other(n) if n == "inet"));

        // Parameters that do not fit are bad-parameter errors, and the connection stays usable.
        let bad = host.exec(&c, &format!("INSERT INTO {s}.t (i4) VALUES ($1)"), vec![ParameterValue::Int64(1 << 40)]).await;
        assert!(matches!(bad, Err(Error::BadParameter(m)) if m.contains("out of range for type int4")));
        let bad = host.exec(&c, &format!("INSERT INTO {s}.t (by) VALUES ($1)"), vec![ParameterValue::Str("x".into())]).await;
        assert!(matches!(bad, Err(Error::BadParameter(m)) if m.contains("cannot be bound to type bytea")));
        let bad = host.query(&c, "SELECT $1::int4, $2::int4", vec![ParameterValue::Int32(1)]).await;
        assert!(matches!(bad, Err(Error::BadParameter(m)) if m.contains("2 parameters but 1")));
        // An out-of-range timestamp decodes to a conversion error, not a trap.
        let bad = host.query(&c, "SELECT 'infinity'::timestamptz", vec![]).await;
        assert!(matches!(bad, Err(Error::ValueConversionFailed(_))), "{bad:?}");
        assert_eq!(host.pid(&c).await.unwrap(), host.pid(&c).await.unwrap());
        host.close(c);
    });
}

#[test]
fn server_errors_carry_their_sqlstate() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "errors");
    let s = scratch.schema.clone();
    rt.block_on(async {
        let mut host = Host::new(PgSettings::default());
        let c = host.open().await.unwrap();
        host.exec(&c, &format!("CREATE TABLE {s}.k (id int8 PRIMARY KEY, v text)"), vec![]).await.unwrap();
        let insert = format!("INSERT INTO {s}.k SELECT g, 'v' FROM generate_series($1::int8, $2::int8) g");
        let n = host.exec(&c, &insert, vec![ParameterValue::Int64(1), ParameterValue::Int64(3)]).await.unwrap();
        assert_eq!(n, 3);
        let dup = host.exec(&c, &format!("INSERT INTO {s}.k VALUES ($1, 'x')"), vec![ParameterValue::Int64(2)]).await;
        let e = dup.unwrap_err();
        assert_eq!(code(&e), "23505");
        if let Error::QueryFailed(QueryError::DbError(db)) = &e {
            assert_eq!(db.severity, "ERROR");
            assert!(db.detail.as_deref().is_some_and(|d| d.contains("(id)=(2)")), "{db:?}");
            assert!(db.extras.iter().any(|(k, v)| k == "constraint" && v == "k_pkey"), "{db:?}");
        }
        let n = host.exec(&c, &format!("UPDATE {s}.k SET v = 'w' WHERE id >= $1"), vec![ParameterValue::Int32(2)]).await;
        assert_eq!(n.unwrap(), 2);
        assert_eq!(code(&host.query(&c, "SELEC 1", vec![]).await.unwrap_err()), "42601");
        assert_eq!(code(&host.query(&c, &format!("SELECT * FROM {s}.missing"), vec![]).await.unwrap_err()), "42P01");
        assert_eq!(code(&host.query(&c, &format!("SELECT nope FROM {s}.k"), vec![]).await.unwrap_err()), "42703");
        host.close(c);

        // Not in allowed_outbound_hosts, TLS required, nothing listening: connection-failed.
        let mut strict = Host::new(PgSettings::default());
        strict.allowed = AllowedHosts::parse(&["postgres://db.example:5432"]).unwrap();
        let denied = strict.open().await.unwrap_err();
        assert!(matches!(&denied, Error::ConnectionFailed(m) if m.contains("not allowed by allowed_outbound_hosts")));
        let tls = host.open_at(&format!("{}?sslmode=verify-full", pg_url())).await.unwrap_err();
        assert!(matches!(&tls, Error::ConnectionFailed(m) if m.contains("sslrootcert")), "{tls:?}");
        let refused = host.open_at("postgres://postgres:pw@127.0.0.1:1/test").await.unwrap_err();
        assert!(
            matches!(&refused, Error::ConnectionFailed(m) if m.contains("cannot connect") && !m.contains("pw")),
            "{refused:?}"
        );
    });
}

#[test]
fn statements_time_out() {
    let rt = runtime();
    let _scratch = Scratch::new(&rt, "timeout");
    rt.block_on(async {
        let settings = PgSettings { statement_timeout: Duration::from_millis(300), ..PgSettings::default() };
        let mut host = Host::new(settings);
        let c = host.open().await.unwrap();
        let e = host.query(&c, "SELECT pg_sleep(5)", vec![]).await.unwrap_err();
        assert_eq!(code(&e), "57014");
        assert!(host.pid(&c).await.is_ok());
        host.close(c);
    });
}

#[test]
fn a_terminated_idle_client_is_replaced_transparently() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "terminate");
    let mut host = Host::new(PgSettings { max_per_address: 2, verbose: true, ..PgSettings::default() });

    // Terminated while idle in the pool, noticed or not by the time it is taken.
    for pause in [Duration::ZERO, Duration::from_millis(200)] {
        let c = rt.block_on(host.open()).unwrap();
        let pid = rt.block_on(host.pid(&c)).unwrap();
        host.close(c);
        scratch.terminate(pid);
        std::thread::sleep(pause);
        let c = rt.block_on(host.open()).unwrap();
        let again = rt.block_on(host.pid(&c)).unwrap();
        assert_ne!(pid, again);
        host.close(c);
    }

    // Taken from the pool, then terminated before its first statement: reconnect and retry.
    let c = rt.block_on(host.open()).unwrap();
    let pid = rt.block_on(host.pid(&c)).unwrap();
    host.close(c);
    let c = rt.block_on(host.open()).unwrap();
    scratch.terminate(pid);
    std::thread::sleep(Duration::from_millis(100));
    let again = rt.block_on(host.pid(&c)).unwrap();
    assert_ne!(pid, again);

    // After a statement succeeded there is no retry: the error is a value, then the next
    // resource works.
    scratch.terminate(again);
    std::thread::sleep(Duration::from_millis(100));
    let e = rt.block_on(host.pid(&c)).unwrap_err();
    match &e {
        Error::QueryFailed(QueryError::Text(m)) => assert!(m.starts_with("connection closed"), "{m}"),
        Error::QueryFailed(QueryError::DbError(db)) => assert_eq!(db.code, "57P01"),
        other => panic!("unexpected {other:?}"),
    }
    host.close(c);

    // Terminated while a statement runs: that statement fails with an error value.
    let c = rt.block_on(host.open()).unwrap();
    let pid = rt.block_on(host.pid(&c)).unwrap();
    let (slow, _) = rt.block_on(async {
        let kill = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            scratch.admin.execute("SELECT pg_terminate_backend($1)", &[&pid]).await.unwrap();
        };
        tokio::join!(host.query(&c, "SELECT pg_sleep(5)", vec![]), kill)
    });
    assert_eq!(code(&slow.unwrap_err()), "57P01");
    host.close(c);
    let c = rt.block_on(host.open()).unwrap();
    assert!(rt.block_on(host.pid(&c)).is_ok());
    host.close(c);
}

#[test]
fn a_client_returned_mid_transaction_is_rolled_back() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "rollback");
    let s = scratch.schema.clone();
    rt.block_on(async {
        // One client only, so the next lease gets the very same connection.
        let mut host = Host::new(PgSettings { max_per_address: 1, ..PgSettings::default() });
        let c = host.open().await.unwrap();
        host.exec(&c, &format!("CREATE TABLE {s}.r (i int8)"), vec![]).await.unwrap();
        host.exec(&c, "BEGIN", vec![]).await.unwrap();
        host.exec(&c, &format!("INSERT INTO {s}.r VALUES (1)"), vec![]).await.unwrap();
        let pid = host.pid(&c).await.unwrap();
        host.close(c);

        let c = host.open().await.unwrap();
        assert_eq!(host.pid(&c).await.unwrap(), pid);
        // SAVEPOINT outside a transaction block fails with 25P01: no transaction is open.
        assert_eq!(code(&host.exec(&c, "SAVEPOINT s", vec![]).await.unwrap_err()), "25P01");
        let set = host.query(&c, &format!("SELECT count(*) FROM {s}.r"), vec![]).await.unwrap();
        assert!(matches!(set.rows[0][0], DbValue::Int64(0)));

        // A committed transaction stays committed; an aborted one is rolled back on return.
        host.exec(&c, "BEGIN", vec![]).await.unwrap();
        host.exec(&c, &format!("INSERT INTO {s}.r VALUES (2)"), vec![]).await.unwrap();
        host.exec(&c, "COMMIT", vec![]).await.unwrap();
        host.exec(&c, "START TRANSACTION", vec![]).await.unwrap();
        assert_eq!(code(&host.exec(&c, "SELECT 1/0", vec![]).await.unwrap_err()), "22012");
        host.close(c);
        let c = host.open().await.unwrap();
        assert_eq!(host.pid(&c).await.unwrap(), pid);
        let set = host.query(&c, &format!("SELECT count(*) FROM {s}.r"), vec![]).await.unwrap();
        assert!(matches!(set.rows[0][0], DbValue::Int64(1)));
        host.close(c);
    });
}

#[test]
fn a_full_pool_fails_after_the_wait() {
    let rt = runtime();
    let _scratch = Scratch::new(&rt, "full");
    rt.block_on(async {
        let settings = PgSettings {
            max_per_address: 1,
            acquire_timeout: Duration::from_millis(200),
            ..PgSettings::default()
        };
        let mut host = Host::new(settings);
        let c = host.open().await.unwrap();
        let e = host.open().await.unwrap_err();
        assert!(matches!(&e, Error::ConnectionFailed(m) if m.contains("stayed busy")), "{e:?}");
        host.close(c);
        let c = host.open().await.unwrap();
        host.close(c);
    });
}

#[test]
fn concurrent_instances_share_the_pool() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "concurrent");
    let s = scratch.schema.clone();
    rt.block_on(async {
        let pools =
            std::sync::Arc::new(Pools::new(PgSettings { max_per_address: 4, ..PgSettings::default() }));
        let allowed = std::sync::Arc::new(AllowedHosts::parse(&["postgres://*:*"]).unwrap());
        {
            let mut table = ResourceTable::new();
            let mut view = PgView {
                pools: &pools,
                allowed: &allowed,
                table: &mut table,
                statements: &Default::default(),
            };
            let c = view.open(pg_url()).await.unwrap();
            let b = Resource::new_borrow(c.rep());
            view.execute(b, format!("CREATE TABLE {s}.n (i int8)"), vec![]).await.unwrap();
            HostConnection::drop(&mut view, c).unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..24i64 {
            let (pools, allowed, s) = (pools.clone(), allowed.clone(), s.clone());
            tasks.push(tokio::spawn(async move {
                let mut table = ResourceTable::new();
                let mut view = PgView {
                    pools: &pools,
                    allowed: &allowed,
                    table: &mut table,
                    statements: &Default::default(),
                };
                let c = view.open(pg_url()).await.unwrap();
                for sql in
                    ["BEGIN".to_string(), format!("INSERT INTO {s}.n VALUES ($1)"), "COMMIT".to_string()]
                {
                    let params = if sql.contains("$1") { vec![ParameterValue::Int64(i)] } else { vec![] };
                    view.execute(Resource::new_borrow(c.rep()), sql, params).await.unwrap();
                }
                HostConnection::drop(&mut view, c).unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut table = ResourceTable::new();
        let mut view =
            PgView { pools: &pools, allowed: &allowed, table: &mut table, statements: &Default::default() };
        let c = view.open(pg_url()).await.unwrap();
        let set =
            view.query(Resource::new_borrow(c.rep()), format!("SELECT count(*) FROM {s}.n"), vec![]).await;
        assert!(matches!(set.unwrap().rows[0][0], DbValue::Int64(24)));
        let open = view
            .query(
                Resource::new_borrow(c.rep()),
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'veil'".to_string(),
                vec![],
            )
            .await
            .unwrap();
        // Other veil processes may be connected too; this pool alone never exceeds its 4 slots.
        assert!(matches!(open.rows[0][0], DbValue::Int64(n) if n >= 1));
        HostConnection::drop(&mut view, c).unwrap();
    });
}

/// Through the pool, an address without `sslmode` (libpq's `prefer`) uses TLS when the server
/// offers it, and is refused (never plain text) when it does not; `sslmode=disable` is plain text.
#[test]
fn tls_unless_disabled() {
    let rt = runtime();
    let scratch = Scratch::new(&rt, "tls");
    let server_ssl: String =
        rt.block_on(scratch.admin.query_one("SHOW ssl", &[])).unwrap().get::<_, String>(0);
    rt.block_on(async {
        let mut host = Host::new(PgSettings::default());
        let ssl_of = |set: RowSet| match set.rows.first().and_then(|r| r.first()) {
            Some(DbValue::Boolean(b)) => *b,
            other => panic!("unexpected {other:?}"),
        };
        let sql = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
        let disable = if pg_url().contains('?') { "&sslmode=disable" } else { "?sslmode=disable" };
        let c = host.open_at(&format!("{}{disable}", pg_url())).await.unwrap();
        assert!(!ssl_of(host.query(&c, sql, vec![]).await.unwrap()));
        host.close(c);
        match host.open_at(&pg_url()).await {
            Ok(c) => {
                assert_eq!(server_ssl, "on");
                assert!(ssl_of(host.query(&c, sql, vec![]).await.unwrap()), "not TLS");
                host.close(c);
            }
            Err(e) => {
                assert_eq!(server_ssl, "off", "{e:?}");
                assert!(matches!(&e, Error::ConnectionFailed(m) if m.contains("TLS")), "{e:?}");
            }
        }
    });
}
