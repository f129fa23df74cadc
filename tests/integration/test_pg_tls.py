"""PostgreSQL over TLS through the host's pool (docs/storage.md, "TLS"), and the server restarted
mid-load (docs/storage.md, "Races and faults"), against a throw-away cluster this module starts
(pgcluster.py) with a certificate it made. Runs in the PostgreSQL pass (VEIL_STORE=postgres)."""
import shutil
import threading
import time

import pytest
import requests

from pgcluster import Cluster
from veilkit import VeilServer, err, ok

pytestmark = pytest.mark.store("postgres")  # TLS to PostgreSQL: the PostgreSQL pass only


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory):
    """One state directory for every server here: the compiled component is cached once."""
    return tmp_path_factory.mktemp("pg-tls-state")


def start(cluster, shared_state, tmp_path, url, name="pg", allowed=None, **kw):
    return VeilServer(tmp_path / name, state_dir=shared_state, name=name,
                      raw_env={"SPIN_VARIABLE_DATABASE_URL": url},
                      allowed_hosts=cluster.allowed_hosts() if allowed is None else allowed, **kw)


def works(s) -> None:
    t = s.tenant()
    name = t.create_scheme()["name"]
    assert t.unprotect(t.protect(name, ["over the wire"])) == ["over the wire"]


def refused(s, cluster, *log_parts) -> str:
    """Every store route answers 503 store_unavailable; the log says why, never the password."""
    t = s.tenant()
    err(t.admin.post("/v1/schemes", t.scheme_body()), 503, "store_unavailable")
    err(t.app.post("/v1/protect", {"scheme": "x", "values": ["a"]}), 503, "store_unavailable")
    log = s.stderr()
    for part in log_parts:
        assert part in log, f"{part!r} not in the log:\n{log}"
    assert cluster.password not in log
    return log


def test_require_is_tls(cluster, shared_state, tmp_path):
    # channel_binding=require: the login is SCRAM-SHA-256-PLUS, bound to the server certificate
    s = start(cluster, shared_state, tmp_path, cluster.url(sslmode="require", channel_binding="require"))
    try:
        works(s)
        sessions = cluster.veil_sessions()
        assert sessions and all(ssl for ssl, _ in sessions), sessions
        assert all(v in ("TLSv1.2", "TLSv1.3") for _, v in sessions), sessions
    finally:
        s.stop()


@pytest.mark.parametrize("params", [{}, {"sslmode": "prefer"}, {"sslmode": "allow"}], ids=["no-sslmode", "prefer", "allow"])
def test_prefer_allow_and_no_sslmode_mean_tls_never_plain_text(cluster, shared_state, tmp_path, params):
    s = start(cluster, shared_state, tmp_path, cluster.url(**params))
    try:
        works(s)
        assert all(ssl for ssl, _ in cluster.veil_sessions())
        # a server that stops offering TLS is refused, not talked to in plain text
        s.stop()
        cluster.set_ssl(False)
        s.start()
        refused(s, cluster, "server does not support TLS")
    finally:
        cluster.set_ssl(True)
        s.stop()


def test_disable_is_plain_text(cluster, shared_state, tmp_path):
    s = start(cluster, shared_state, tmp_path, cluster.url(sslmode="disable"))
    try:
        works(s)
        sessions = cluster.veil_sessions()
        assert sessions and not any(ssl for ssl, _ in sessions), sessions
    finally:
        s.stop()


def test_verify_ca_with_the_right_root_relative_to_the_working_directory(cluster, shared_state, tmp_path):
    # the certificate names `localhost`, not 127.0.0.1: verify-ca checks the chain only
    workdir = tmp_path / "ca"
    workdir.mkdir()
    shutil.copy(cluster.ca_pem, workdir / "root.pem")
    s = start(cluster, shared_state, tmp_path, cluster.url(sslmode="verify-ca", sslrootcert="root.pem"), name="ca")
    try:
        works(s)
        assert all(ssl for ssl, _ in cluster.veil_sessions())
    finally:
        s.stop()


def test_verify_full_with_the_right_root_and_host(cluster, shared_state, tmp_path):
    s = start(cluster, shared_state, tmp_path,
              cluster.url(host="localhost", sslmode="verify-full", sslrootcert=cluster.ca_pem))
    try:
        works(s)
        assert all(ssl for ssl, _ in cluster.veil_sessions())
    finally:
        s.stop()


@pytest.mark.parametrize("mode", ["verify-ca", "verify-full"])
def test_a_wrong_root_is_refused(cluster, shared_state, tmp_path, mode):
    s = start(cluster, shared_state, tmp_path,
              cluster.url(host="localhost", sslmode=mode, sslrootcert=cluster.other_ca_pem))
    try:
        refused(s, cluster, "metadata store unavailable", "invalid peer certificate", "UnknownIssuer",
                f"postgres://veil@localhost:{cluster.port}/veil")
    finally:
        s.stop()


def test_verify_full_with_a_wrong_host_name_is_refused(cluster, shared_state, tmp_path):
    s = start(cluster, shared_state, tmp_path,
              cluster.url(host="127.0.0.1", sslmode="verify-full", sslrootcert=cluster.ca_pem))
    try:
        refused(s, cluster, "invalid peer certificate", 'certificate not valid for name "127.0.0.1"')
    finally:
        s.stop()


def test_a_missing_root_file_is_a_clear_error(cluster, shared_state, tmp_path):
    s = start(cluster, shared_state, tmp_path, cluster.url(sslmode="verify-ca", sslrootcert="/nonexistent/ca.pem"))
    try:
        refused(s, cluster, "cannot read sslrootcert /nonexistent/ca.pem")
    finally:
        s.stop()


def test_allowed_outbound_hosts_still_applies(cluster, shared_state, tmp_path):
    s = start(cluster, shared_state, tmp_path,
              cluster.url(host="localhost", sslmode="verify-full", sslrootcert=cluster.ca_pem),
              allowed=[f"postgres://127.0.0.1:{cluster.port}"])
    try:
        refused(s, cluster, f"postgres://localhost:{cluster.port} is not allowed by allowed_outbound_hosts")
    finally:
        s.stop()


def test_a_server_restart_mid_load(cluster, shared_state, tmp_path):
    """The server stops (fast shutdown) and starts again under load: requests meanwhile answer
    503 store_unavailable, none hangs past the request deadline, nothing is half written, and the
    requests after it is back succeed without restarting the host."""
    deadline = 10
    s = start(cluster, shared_state, tmp_path,
              cluster.url(host="localhost", sslmode="verify-full", sslrootcert=cluster.ca_pem),
              extra_args=["--request-timeout-secs", str(deadline)])
    try:
        t = s.tenant()
        name = t.create_scheme()["name"]
        values = [f"value-{i}" for i in range(50)]
        stop = threading.Event()
        outcomes = {"ok": 0, "503": 0}
        created = []
        failures = []

        def call(fn):
            r = fn()  # requests' own timeout (veilkit.TIMEOUT) is longer than the deadline
            if r.status_code in (200, 201):
                outcomes["ok"] += 1
                return r.json()
            err(r, 503, "store_unavailable")
            outcomes["503"] += 1
            return None

        def worker(i):
            try:
                n = 0
                while not stop.is_set():
                    body = call(lambda: t.app.post("/v1/protect", {"scheme": name, "values": values}))
                    if body:
                        toks = [x["value"] for x in body["results"]]
                        back = call(lambda: t.support.post("/v1/unprotect", {"values": toks}))
                        if back:
                            assert [x["value"] for x in back["results"]] == values
                    n += 1
                    made = call(lambda: t.admin.post("/v1/schemes", t.scheme_body(f"r{i}-{n}")))
                    if made:
                        created.append(made["name"])
            except Exception as e:  # noqa: BLE001 - re-raised in the main thread
                failures.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        time.sleep(1.0)
        ok_before = outcomes["ok"]
        cluster.stop()
        time.sleep(1.5)
        cluster.start()
        time.sleep(1.0)
        stop.set()
        for th in threads:
            th.join(deadline + 30)
        assert not any(th.is_alive() for th in threads), "a request hung"
        if failures:
            raise failures[0]
        assert ok_before > 0 and outcomes["503"] > 0, outcomes
        # back: the very next requests succeed, with the same host
        assert t.unprotect(t.protect(name, ["after the restart"])) == ["after the restart"]
        t.create_scheme()
        # nothing half written: every scheme has exactly its first key, every key its scheme
        schemes = {r[0] for r in cluster.sql("SELECT name FROM schemes WHERE tenant = %s", "veil", (t.id,))}
        keys = cluster.sql("SELECT scheme, version FROM data_keys WHERE tenant = %s", "veil", (t.id,))
        assert sorted(k for k, _ in keys) == sorted(schemes) and all(v == 1 for _, v in keys)
        assert set(created) <= schemes
        assert cluster.password not in s.stderr()
        assert requests.get(s.url + "/healthz", timeout=10).status_code == 200
    finally:
        s.stop()
