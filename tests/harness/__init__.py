"""The one harness that builds nothing but configures and starts Veil for the integration tests
(tests/integration, through veilkit) and the benchmarks (benches/) alike.

  procs    children registered for cleanup, free loopback ports, "wait until it answers"
  tokens   the session's keys (local KEK, HS256 secret, RSA/EC/Ed25519 JWT keys, the JWKS) and
           JWT minting, the hostile tokens included
  veil     the binaries, a manifest serving them, the host's environment, `VeilServer`
  api      a small HTTP client for Veil's API and its exact-answer checks (`ok`, `err`, ...)
  postgres throw-away PostgreSQL databases

Import it with `tests/` on `sys.path` (tests/pytest.ini does that for pytest; benches/bench.py
does it itself). The binaries must already be built (scripts/build.sh); nothing here builds.
"""
