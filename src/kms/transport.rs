//! The seam between the KMS clients and the network: a synchronous HTTP transport trait, a clock
//! that can also wait, and the bounded retry loop both providers share.
//!
//! The clients build `http` requests and read `http` responses; the component implements
//! [`HttpTransport`] over `wasi:http` (the host enforces `allowed_outbound_hosts`), unit tests use
//! [`ScriptedTransport`]. Nothing here logs or keeps a request or response body.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::KmsError;

/// Why a request got no HTTP response. Messages never carry bodies, headers or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The host refused the request (the destination is not in `allowed_outbound_hosts`).
    Denied,
    /// No complete response within the timeout.
    Timeout,
    /// The connection could not be made (DNS, refused, TLS).
    Connect(String),
    /// Anything else (protocol error, response too large).
    Other(String),
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Denied => f.write_str("outbound request refused by the host"),
            TransportError::Timeout => f.write_str("timed out"),
            TransportError::Connect(m) => write!(f, "connection failed: {m}"),
            TransportError::Other(m) => write!(f, "transport error: {m}"),
        }
    }
}

/// A synchronous HTTP client: one request, one response (any status), or why there was none.
pub trait HttpTransport {
    fn send(
        &self,
        req: http::Request<Vec<u8>>,
        timeout: Duration,
    ) -> Result<http::Response<Vec<u8>>, TransportError>;
}

/// A transport for builds without outbound HTTP (native tools): every request is refused.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTransport;

impl HttpTransport for NoTransport {
    fn send(
        &self,
        _req: http::Request<Vec<u8>>,
        _timeout: Duration,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        Err(TransportError::Denied)
    }
}

/// Wall-clock time (SigV4 dates, token expiry) and waiting (retry back-off), as one seam so tests
/// neither sleep nor depend on the date.
pub trait Clock {
    fn now(&self) -> SystemTime;
    fn sleep(&self, d: Duration);
}

/// The real clock: `SystemTime::now` and `std::thread::sleep` (wasi:clocks in the component).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Seconds since the Unix epoch on `clock` (0 before it).
pub(crate) fn unix_secs(clock: &dyn Clock) -> i64 {
    clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long and how often a provider may retry one logical call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Per-request timeout handed to the transport (`kms_timeout_ms`).
    pub timeout: Duration,
    /// Retries after the first attempt (`kms_max_retries`).
    pub max_retries: u32,
    /// The sum of all waits of one call never exceeds this.
    pub max_total_wait: Duration,
    /// No single wait is longer than this, whatever `Retry-After` asks for.
    pub max_single_wait: Duration,
    /// First back-off when the provider gives no `Retry-After`; doubles on each retry.
    pub base_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_millis(5000),
            max_retries: 3,
            max_total_wait: Duration::from_secs(10),
            max_single_wait: Duration::from_secs(5),
            base_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// The policy from `kms_timeout_ms` and `kms_max_retries`; the wait bounds are fixed.
    pub fn from_settings(s: &super::Settings) -> Self {
        RetryPolicy {
            timeout: Duration::from_millis(s.timeout_ms),
            max_retries: s.max_retries,
            ..RetryPolicy::default()
        }
    }
}

/// What one attempt of a call came to.
pub(crate) enum Attempt<T> {
    Done(T),
    /// Worth another try after `after` (the provider's `Retry-After`) or the back-off; `err` is
    /// the answer if the budget is spent.
    Retry {
        after: Option<Duration>,
        err: KmsError,
    },
    Fail(KmsError),
}

/// Runs `attempt` until it is done, fails, or the retry budget is spent.
pub(crate) fn with_retries<T>(
    policy: &RetryPolicy,
    clock: &dyn Clock,
    mut attempt: impl FnMut() -> Attempt<T>,
) -> Result<T, KmsError> {
    let mut waited = Duration::ZERO;
    let mut retries = 0u32;
    loop {
        match attempt() {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fail(e) => return Err(e),
            Attempt::Retry { after, err } => {
                if retries >= policy.max_retries {
                    return Err(err);
                }
                let backoff = policy.base_backoff.saturating_mul(1u32 << retries.min(16));
                let wait = after.unwrap_or(backoff);
                if wait > policy.max_single_wait || waited.saturating_add(wait) > policy.max_total_wait {
                    // Waiting less than the provider asked would only be refused again.
                    return Err(err);
                }
                clock.sleep(wait);
                waited += wait;
                retries += 1;
            }
        }
    }
}

/// `Retry-After` as a number of seconds (the HTTP-date form is treated as absent).
pub(crate) fn retry_after(resp: &http::Response<Vec<u8>>) -> Option<Duration> {
    let v = resp.headers().get(http::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The outcome of a transport failure, shared by the providers; `who` names the endpoint kind.
pub(crate) fn transport_failure<T>(who: &str, e: TransportError, policy: &RetryPolicy) -> Attempt<T> {
    match e {
        TransportError::Denied => Attempt::Fail(KmsError::Misconfigured(format!(
            "the host refused the outbound request to the {who}; add its origin to allowed_outbound_hosts"
        ))),
        // A slow provider is not retried: that would multiply the caller's wait.
        TransportError::Timeout => Attempt::Fail(KmsError::Unavailable(format!(
            "{who}: no response within {} ms",
            policy.timeout.as_millis()
        ))),
        TransportError::Connect(m) => Attempt::Retry {
            after: None,
            err: KmsError::Unavailable(format!("{who}: connection failed: {m}")),
        },
        TransportError::Other(m) => {
            Attempt::Retry { after: None, err: KmsError::Unavailable(format!("{who}: {m}")) }
        }
    }
}

/// Largest response body the providers parse (KMS and token answers are a few KiB).
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 10;

/// A minimal blocking HTTP/1.1 client over `std::net` (plain http to loopback only), for the
/// ignored tests that run the providers against moto and the Key Vault emulator.
#[cfg(test)]
pub(crate) mod loopback {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::{HttpTransport, TransportError};

    #[derive(Debug, Default)]
    pub struct LoopbackTransport;

    impl HttpTransport for LoopbackTransport {
        fn send(
            &self,
            req: http::Request<Vec<u8>>,
            timeout: Duration,
        ) -> Result<http::Response<Vec<u8>>, TransportError> {
            let authority = req.uri().authority().map(|a| a.to_string()).ok_or(TransportError::Denied)?;
            if req.uri().scheme_str() != Some("http") {
                return Err(TransportError::Denied);
            }
            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_else(|| "/".into());
            let mut stream =
                TcpStream::connect(&authority).map_err(|e| TransportError::Connect(e.kind().to_string()))?;
            stream.set_read_timeout(Some(timeout)).map_err(|e| TransportError::Other(e.to_string()))?;
            let mut head = format!("{} {path} HTTP/1.1\r\nhost: {authority}\r\n", req.method());
            for (k, v) in req.headers() {
                head.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v.as_bytes())));
            }
            head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", req.body().len()));
            stream.write_all(head.as_bytes()).map_err(|e| TransportError::Other(e.to_string()))?;
            stream.write_all(req.body()).map_err(|e| TransportError::Other(e.to_string()))?;
            let mut raw = Vec::new();
            match stream.read_to_end(&mut raw) {
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    return Err(TransportError::Timeout)
                }
                Err(e) => return Err(TransportError::Other(e.to_string())),
            }
            let split = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or(TransportError::Other("no head".into()))?;
            let head = String::from_utf8_lossy(&raw[..split]).into_owned();
            let mut body = raw[split + 4..].to_vec();
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .and_then(|c| c.parse().ok())
                .ok_or(TransportError::Other("bad status line".into()))?;
            let mut b = http::Response::builder().status(status);
            let mut chunked = false;
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    chunked |= k.eq_ignore_ascii_case("transfer-encoding")
                        && v.trim().eq_ignore_ascii_case("chunked");
                    b = b.header(k.trim(), v.trim());
                }
            }
            if chunked {
                body = dechunk(&body);
            }
            b.body(body).map_err(|e| TransportError::Other(e.to_string()))
        }
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
            let size = usize::from_str_radix(String::from_utf8_lossy(&data[..i]).trim(), 16).unwrap_or(0);
            if size == 0 || data.len() < i + 2 + size {
                break;
            }
            out.extend_from_slice(&data[i + 2..i + 2 + size]);
            data = &data[(i + 4 + size).min(data.len())..];
        }
        out
    }
}

/// Test doubles: a scripted, recording transport and a clock whose sleeps only advance time.
#[cfg(test)]
pub(crate) mod testing {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;
    use std::fmt;
    use std::time::{Duration, SystemTime};

    use super::{Clock, HttpTransport, TransportError};

    /// A recorded request, for assertions in tests.
    #[derive(Debug, Clone)]
    pub struct RecordedRequest {
        pub method: String,
        pub uri: String,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
        pub timeout: Duration,
    }

    impl RecordedRequest {
        /// The first value of header `name` (case-insensitive).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
        }
        pub fn body_json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
        }
    }

    type Responder = Box<dyn Fn(&RecordedRequest) -> Result<http::Response<Vec<u8>>, TransportError>>;

    /// A fake transport for unit tests: answers from a script, in order, and records every request.
    pub struct ScriptedTransport {
        script: RefCell<VecDeque<Responder>>,
        recorded: RefCell<Vec<RecordedRequest>>,
    }

    impl Default for ScriptedTransport {
        fn default() -> Self {
            ScriptedTransport { script: RefCell::new(VecDeque::new()), recorded: RefCell::new(Vec::new()) }
        }
    }

    impl fmt::Debug for ScriptedTransport {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ScriptedTransport")
                .field("pending", &self.script.borrow().len())
                .field("recorded", &self.recorded.borrow().len())
                .finish()
        }
    }

    impl ScriptedTransport {
        /// Queues an answer computed from the request.
        pub fn then(
            &self,
            f: impl Fn(&RecordedRequest) -> Result<http::Response<Vec<u8>>, TransportError> + 'static,
        ) -> &Self {
            self.script.borrow_mut().push_back(Box::new(f));
            self
        }
        /// Queues a fixed response.
        pub fn respond(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> &Self {
            let headers: Vec<(String, String)> =
                headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let body = body.to_vec();
            self.then(move |_| response(status, &headers, &body))
        }
        /// Queues a transport failure.
        pub fn fail(&self, e: TransportError) -> &Self {
            self.then(move |_| Err(e.clone()))
        }
        pub fn requests(&self) -> Vec<RecordedRequest> {
            self.recorded.borrow().clone()
        }
        pub fn pending(&self) -> usize {
            self.script.borrow().len()
        }
    }

    /// Builds a response (test helper).
    pub fn response(
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        b.body(body.to_vec()).map_err(|e| TransportError::Other(e.to_string()))
    }

    impl HttpTransport for ScriptedTransport {
        fn send(
            &self,
            req: http::Request<Vec<u8>>,
            timeout: Duration,
        ) -> Result<http::Response<Vec<u8>>, TransportError> {
            let rec = RecordedRequest {
                method: req.method().to_string(),
                uri: req.uri().to_string(),
                headers: req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect(),
                body: req.body().clone(),
                timeout,
            };
            self.recorded.borrow_mut().push(rec.clone());
            let next = self.script.borrow_mut().pop_front();
            match next {
                Some(f) => f(&rec),
                None => Err(TransportError::Other("the test script has no more responses".into())),
            }
        }
    }

    /// A clock for tests: time stands still except when something sleeps, and every sleep is recorded.
    #[derive(Debug)]
    pub struct FakeClock {
        now: Cell<SystemTime>,
        slept: RefCell<Vec<Duration>>,
    }

    impl FakeClock {
        pub fn at_unix(secs: u64) -> Self {
            FakeClock {
                now: Cell::new(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)),
                slept: RefCell::new(Vec::new()),
            }
        }
        pub fn advance(&self, d: Duration) {
            self.now.set(self.now.get() + d);
        }
        pub fn slept(&self) -> Vec<Duration> {
            self.slept.borrow().clone()
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> SystemTime {
            self.now.get()
        }
        fn sleep(&self, d: Duration) {
            self.slept.borrow_mut().push(d);
            self.advance(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeClock;
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy { max_retries: 3, ..RetryPolicy::default() }
    }

    #[test]
    fn retries_then_succeeds_with_recorded_waits() {
        let clock = FakeClock::at_unix(1000);
        let mut n = 0;
        let r = with_retries(&policy(), &clock, || {
            n += 1;
            if n < 3 {
                Attempt::Retry { after: Some(Duration::from_secs(1)), err: KmsError::Throttled("t".into()) }
            } else {
                Attempt::Done(n)
            }
        });
        assert_eq!(r, Ok(3));
        assert_eq!(clock.slept(), vec![Duration::from_secs(1); 2]);
    }

    #[test]
    fn budget_bounds_retries_and_waits() {
        let clock = FakeClock::at_unix(0);
        let r: Result<(), _> = with_retries(&policy(), &clock, || Attempt::Retry {
            after: None,
            err: KmsError::Unavailable("down".into()),
        });
        assert!(matches!(r, Err(KmsError::Unavailable(_))));
        assert_eq!(
            clock.slept(),
            vec![Duration::from_millis(200), Duration::from_millis(400), Duration::from_millis(800)]
        );
        // A Retry-After longer than one wait may be is not waited for at all.
        let clock = FakeClock::at_unix(0);
        let r: Result<(), _> = with_retries(&policy(), &clock, || Attempt::Retry {
            after: Some(Duration::from_secs(60)),
            err: KmsError::Throttled("t".into()),
        });
        assert!(matches!(r, Err(KmsError::Throttled(_))));
        assert!(clock.slept().is_empty());
        // Total wait stays within max_total_wait.
        let clock = FakeClock::at_unix(0);
        let p = RetryPolicy { max_retries: 10, ..policy() };
        let _: Result<(), _> = with_retries(&p, &clock, || Attempt::Retry {
            after: Some(Duration::from_secs(4)),
            err: KmsError::Throttled("t".into()),
        });
        assert_eq!(clock.slept().iter().sum::<Duration>(), Duration::from_secs(8));
    }

    #[test]
    fn fail_is_not_retried() {
        let clock = FakeClock::at_unix(0);
        let mut n = 0;
        let r: Result<(), _> = with_retries(&policy(), &clock, || {
            n += 1;
            Attempt::Fail(KmsError::Denied("no".into()))
        });
        assert!(matches!(r, Err(KmsError::Denied(_))));
        assert_eq!(n, 1);
    }

    #[test]
    fn timeouts_fail_fast_and_denied_is_a_configuration_error() {
        let p = policy();
        assert!(matches!(
            transport_failure::<()>("vault", TransportError::Timeout, &p),
            Attempt::Fail(KmsError::Unavailable(_))
        ));
        assert!(matches!(
            transport_failure::<()>("vault", TransportError::Denied, &p),
            Attempt::Fail(KmsError::Misconfigured(_))
        ));
        assert!(matches!(
            transport_failure::<()>("vault", TransportError::Connect("refused".into()), &p),
            Attempt::Retry { .. }
        ));
    }

    #[test]
    fn retry_after_seconds_only() {
        let r = |v: &str| http::Response::builder().header("retry-after", v).body(Vec::new()).ok();
        assert_eq!(r("2").as_ref().and_then(retry_after), Some(Duration::from_secs(2)));
        assert_eq!(r("Wed, 21 Oct 2015 07:28:00 GMT").as_ref().and_then(retry_after), None);
    }
}
