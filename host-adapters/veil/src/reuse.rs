//! Instance reuse scoped to one credential (docs/architecture.md, "Instance reuse"): an instance
//! kept after a request only ever serves later requests that carry exactly the same credential.
//!
//! The host does not authenticate anyone. It keys its idle instances by a keyed hash (HMAC-SHA256
//! under a random per-process key) of the request's credential headers, byte for byte: the same
//! credential always authenticates as the same principal (tenant and roles), so an instance never
//! serves two tenants, nor two callers of one tenant, and nobody reaches another credential's
//! instance without holding that credential. Requests with no credential header at all (health,
//! the public routes, and anything the component will answer 401) share one pool of their own.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The headers a credential can come in (src/auth: `Authorization`, `X-API-Key`; the Transit
/// routes' `X-Vault-Token`). Every value of each, in order, goes into the scope.
pub const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-vault-token"];

/// Which idle instances a request may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// No credential header at all.
    Anonymous,
    /// The keyed hash of the credential headers' exact bytes.
    Credential([u8; 32]),
}

/// Derives scopes under a key drawn when the host starts (never stored, never logged), so that a
/// scope says nothing about the credential to anyone who sees it.
pub struct Scoper {
    key: [u8; 32],
}

impl Scoper {
    /// A scoper with a fresh random key from the operating system.
    pub fn new() -> std::io::Result<Self> {
        let mut key = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(Scoper { key })
    }

    /// The scope of a request with these headers.
    pub fn scope(&self, headers: &http::HeaderMap) -> Scope {
        let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // HMAC takes keys of any length.
            Err(_) => return Scope::Anonymous,
        };
        let mut any = false;
        for name in CREDENTIAL_HEADERS {
            let values = headers.get_all(name);
            let count = values.iter().count() as u64;
            mac.update(&count.to_le_bytes());
            for value in values {
                any = true;
                mac.update(&(value.len() as u64).to_le_bytes());
                mac.update(value.as_bytes());
            }
        }
        if !any {
            return Scope::Anonymous;
        }
        Scope::Credential(mac.finalize().into_bytes().into())
    }
}

impl Drop for Scoper {
    fn drop(&mut self) {
        // The key only guards scopes in this process's memory; wiped anyway.
        self.key.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&mut self.key);
    }
}

struct Idle<W> {
    warm: W,
    since: Instant,
}

struct Inner<W> {
    /// Idle instances by scope, most recently used last.
    scopes: HashMap<Scope, Vec<Idle<W>>>,
    count: usize,
    last_sweep: Instant,
}

/// The idle instances, in pools by scope. Bounded: at most `max_idle` in all (the server passes
/// the pool slots no running request holds), the least recently used evicted first; an instance
/// idle for longer than `idle_timeout` is dropped. Evicted instances are handed back to the
/// caller, to be dropped outside the lock.
pub struct IdlePools<W> {
    inner: Mutex<Inner<W>>,
    idle_timeout: Duration,
}

/// How often, at most, a request sweeps out instances idle for too long.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<W> IdlePools<W> {
    pub fn new(idle_timeout: Duration) -> Self {
        IdlePools {
            inner: Mutex::new(Inner { scopes: HashMap::new(), count: 0, last_sweep: Instant::now() }),
            idle_timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<W>> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Idle instances in all pools.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().count
    }

    /// The most recently used idle instance of `scope`, if one is fresh enough; also returns what
    /// a due sweep removed.
    pub fn take(&self, scope: Scope, now: Instant) -> (Option<W>, Vec<W>) {
        let mut inner = self.lock();
        let expired = self.sweep(&mut inner, now);
        let Some(pool) = inner.scopes.get_mut(&scope) else { return (None, expired) };
        let idle = pool.pop();
        if pool.is_empty() {
            inner.scopes.remove(&scope);
        }
        let warm = idle.map(|i| {
            inner.count -= 1;
            i.warm
        });
        (warm, expired)
    }

    /// Keeps `warm` for `scope`'s next request, after evicting the least recently used instances
    /// (any scope) until fewer than `max_idle` remain; `max_idle == 0` keeps nothing. Returns what
    /// was evicted (and `warm` itself when nothing may be kept).
    pub fn put(&self, scope: Scope, warm: W, max_idle: usize, now: Instant) -> Vec<W> {
        if max_idle == 0 {
            return vec![warm];
        }
        let mut inner = self.lock();
        let mut out = self.sweep(&mut inner, now);
        out.extend(Self::evict(&mut inner, max_idle - 1));
        inner.scopes.entry(scope).or_default().push(Idle { warm, since: now });
        inner.count += 1;
        out
    }

    /// Evicts the least recently used idle instances until at most `max_idle` remain.
    pub fn shrink_to(&self, max_idle: usize) -> Vec<W> {
        Self::evict(&mut self.lock(), max_idle)
    }

    fn evict(inner: &mut Inner<W>, max_idle: usize) -> Vec<W> {
        let mut out = Vec::new();
        while inner.count > max_idle {
            // The pools are few (at most one per idle instance): a scan finds the oldest.
            let oldest = inner
                .scopes
                .iter()
                .filter_map(|(scope, pool)| pool.first().map(|i| (*scope, i.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(scope, _)| scope);
            let Some(scope) = oldest else { break };
            if let Some(pool) = inner.scopes.get_mut(&scope) {
                out.push(pool.remove(0).warm);
                inner.count -= 1;
                if pool.is_empty() {
                    inner.scopes.remove(&scope);
                }
            }
        }
        out
    }

    fn sweep(&self, inner: &mut Inner<W>, now: Instant) -> Vec<W> {
        if now.saturating_duration_since(inner.last_sweep) < SWEEP_EVERY {
            return Vec::new();
        }
        inner.last_sweep = now;
        let timeout = self.idle_timeout;
        let mut out = Vec::new();
        inner.scopes.retain(|_, pool| {
            // Oldest first: the expired ones are a prefix.
            let fresh = pool.iter().position(|i| now.saturating_duration_since(i.since) < timeout);
            let expired = fresh.unwrap_or(pool.len());
            out.extend(pool.drain(..expired).map(|i| i.warm));
            !pool.is_empty()
        });
        inner.count -= out.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn scopes_follow_the_exact_credential() {
        let s = Scoper::new().unwrap();
        let a = s.scope(&headers(&[("authorization", "Bearer a"), ("content-type", "x")]));
        assert_eq!(a, s.scope(&headers(&[("Authorization", "Bearer a")])));
        assert_ne!(a, s.scope(&headers(&[("authorization", "Bearer b")])));
        assert_ne!(a, s.scope(&headers(&[("authorization", "bearer a")])));
        // The same bytes in another header are another credential.
        assert_ne!(a, s.scope(&headers(&[("x-api-key", "Bearer a")])));
        assert_ne!(a, s.scope(&headers(&[("x-vault-token", "Bearer a")])));
        // Two values are not their concatenation, nor one of them.
        let two = s.scope(&headers(&[("authorization", "Bearer a"), ("authorization", "b")]));
        assert_ne!(two, a);
        assert_ne!(two, s.scope(&headers(&[("authorization", "Bearer ab")])));
        assert_eq!(s.scope(&headers(&[("content-type", "x")])), Scope::Anonymous);
        assert_ne!(s.scope(&headers(&[("authorization", "")])), Scope::Anonymous);
        // Another process (another key) derives other scopes.
        assert_ne!(a, Scoper::new().unwrap().scope(&headers(&[("authorization", "Bearer a")])));
    }

    #[test]
    fn an_instance_goes_back_only_to_its_scope() {
        let pools = IdlePools::new(Duration::from_secs(60));
        let (a, b) = (Scope::Credential([1; 32]), Scope::Credential([2; 32]));
        let now = Instant::now();
        assert!(pools.put(a, 1, 10, now).is_empty());
        assert_eq!(pools.take(b, now).0, None);
        assert_eq!(pools.take(Scope::Anonymous, now).0, None);
        assert_eq!(pools.take(a, now).0, Some(1));
        assert_eq!(pools.take(a, now).0, None);
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_bound_holds() {
        let pools = IdlePools::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let scope = |n: u8| Scope::Credential([n; 32]);
        for n in 0..3u8 {
            assert!(pools.put(scope(n), n, 3, t0 + Duration::from_millis(u64::from(n))).is_empty());
        }
        // Full: the next one evicts the oldest (scope 0), whatever its scope.
        assert_eq!(pools.put(scope(9), 9, 3, t0 + Duration::from_millis(5)), vec![0]);
        assert_eq!(pools.len(), 3);
        assert_eq!(pools.shrink_to(1), vec![1, 2]);
        assert_eq!(pools.take(scope(9), t0).0, Some(9));
        assert_eq!(pools.put(scope(1), 1, 0, t0), vec![1], "max_idle 0 keeps nothing");
        assert_eq!(pools.len(), 0);
    }

    #[test]
    fn idle_instances_expire() {
        let pools = IdlePools::new(Duration::from_secs(5));
        let t0 = Instant::now();
        let a = Scope::Credential([1; 32]);
        assert!(pools.put(a, 1, 10, t0).is_empty());
        assert!(pools.put(a, 2, 10, t0 + Duration::from_secs(3)).is_empty());
        let (got, expired) = pools.take(Scope::Anonymous, t0 + Duration::from_secs(6));
        assert_eq!((got, expired), (None, vec![1]));
        assert_eq!(pools.take(a, t0 + Duration::from_secs(6)).0, Some(2));
    }
}
