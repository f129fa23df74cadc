"""A throw-away PostgreSQL cluster for the TLS and restart tests: its own data directory, port and
certificates (a CA, a server certificate for `localhost` signed by it, and an unrelated CA), so
that the tests can switch TLS off and restart the server without disturbing the machine's shared
PostgreSQL. Needs the PostgreSQL server binaries (initdb, pg_ctl), as scripts/ensure-postgres.sh
installs them; run as root, the cluster runs as the `postgres` user."""
from __future__ import annotations

import datetime
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb): run scripts/ensure-postgres.sh first")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def _server_cert(ca_key, ca_cert, dns_name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(dns_name)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Cluster:
    """initdb + pg_ctl in a temporary directory; a login role `veil` (SCRAM password) owning
    database `veil`; TCP on 127.0.0.1 only, with and without TLS; admin through the Unix socket."""

    def __init__(self):
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="veil-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = f"pw-{secrets.token_hex(8)}"
        self.as_postgres = os.geteuid() == 0
        self.owner = pwd.getpwnam("postgres") if self.as_postgres else None
        # certificates: a CA, the server's (for `localhost` only), and an unrelated CA
        ca_key, ca = _ca("veil test CA")
        _, other = _ca("some other CA")
        server_key, server = _server_cert(ca_key, ca, "localhost")
        self.ca_pem = self.root / "ca.pem"
        self.other_ca_pem = self.root / "other-ca.pem"
        self.ca_pem.write_bytes(_pem(ca))
        self.other_ca_pem.write_bytes(_pem(other))
        os.chmod(self.root, 0o755)
        if self.owner:
            os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "-E", "UTF8", "--no-sync")
        (self.data / "server.crt").write_bytes(_pem(server) + _pem(ca))
        (self.data / "server.key").write_bytes(server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        os.chmod(self.data / "server.key", 0o600)
        if self.owner:
            for f in ("server.crt", "server.key"):
                os.chown(self.data / f, self.owner.pw_uid, self.owner.pw_gid)
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = '{self.root}'
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
password_encryption = 'scram-sha-256'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 16MB
max_connections = 60
""")
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostssl all all 127.0.0.1/32 scram-sha-256\n"
            "hostnossl all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self.sql(f"CREATE ROLE veil LOGIN PASSWORD '{self.password}'")
        self.sql("CREATE DATABASE veil OWNER veil")

    def _run(self, tool: str, *args) -> str:
        cmd = [str(self.bin / tool), *map(str, args)]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"{tool} failed ({r.returncode}): {r.stdout}\n{r.stderr}"
        return r.stdout

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def sql(self, statement: str, db: str = "postgres", params=()):
        import psycopg

        with psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname=db, autocommit=True) as c:
            cur = c.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def set_ssl(self, on: bool) -> None:
        self.sql(f"ALTER SYSTEM SET ssl = {'on' if on else 'off'}")
        self.sql("SELECT pg_reload_conf()")

    def url(self, host="127.0.0.1", **params) -> str:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgres://veil:{self.password}@{host}:{self.port}/veil" + (f"?{query}" if query else "")

    def allowed_hosts(self) -> list[str]:
        return [f"postgres://127.0.0.1:{self.port}", f"postgres://localhost:{self.port}"]

    def veil_sessions(self) -> list[tuple]:
        """(ssl, version) of every backend a veil host holds open to this cluster."""
        return self.sql("SELECT s.ssl, s.version FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                        "WHERE a.usename = 'veil' AND a.application_name = 'veil'")

    def destroy(self) -> None:
        try:
            self.stop()
        except AssertionError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
