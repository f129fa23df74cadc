//! What the fuzz targets share: a transport that answers from the fuzzer's bytes, a clock that
//! never sleeps, and the "no echo" check. The targets themselves are in `fuzz_targets/`.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use veil::crypto::secret::SecretKey;
use veil::ids::{KeyVersion, SchemeName, TenantId};
use veil::kms::transport::{Clock, HttpTransport, TransportError};
use veil::kms::{KeyContext, KmsError};

/// Seconds since the epoch the fuzz clock starts at (2026-11-22T16:20:00Z, as the unit tests).
pub const NOW: u64 = 1_795_388_400;

/// One scripted answer: an HTTP response, or why there was none.
#[derive(Debug, Clone)]
pub enum Reply {
    Response { status: u16, headers: Vec<(&'static str, Vec<u8>)>, body: Vec<u8> },
    Failure(TransportError),
}

/// Splits fuzz input into replies. Records are separated by `0xFF`; a record is
/// `status (2 bytes, big-endian) ‖ rest`, where `rest` is `h1 0xFE h2 0xFE body`, `h1 0xFE body`
/// or `body`: `h1` is the value of `primary` (the header the provider reads, e.g.
/// `x-amzn-errortype`), `h2` of `retry-after`; empty ones are left out. A status below 100 is a
/// transport failure instead (status % 4: denied, timeout, connect, other).
pub fn replies(data: &[u8], primary: &'static str) -> Vec<Reply> {
    data.split(|&b| b == 0xFF)
        .filter(|r| r.len() >= 2)
        .map(|r| {
            let status = u16::from_be_bytes([r[0], r[1]]) % 1000;
            if status < 100 {
                return Reply::Failure(match status % 4 {
                    0 => TransportError::Denied,
                    1 => TransportError::Timeout,
                    2 => TransportError::Connect("refused".into()),
                    _ => TransportError::Other("reset".into()),
                });
            }
            let parts: Vec<&[u8]> = r[2..].splitn(3, |&b| b == 0xFE).collect();
            let (h1, h2, body) = match parts.as_slice() {
                [h1, h2, body] => (*h1, *h2, *body),
                [h1, body] => (*h1, &[][..], *body),
                [body] => (&[][..], &[][..], *body),
                _ => (&[][..], &[][..], &[][..]),
            };
            let mut headers = Vec::new();
            if !h1.is_empty() {
                headers.push((primary, h1.to_vec()));
            }
            if !h2.is_empty() {
                headers.push(("retry-after", h2.to_vec()));
            }
            Reply::Response { status, headers, body: body.to_vec() }
        })
        .collect()
}

/// Answers each request with the next reply; when they run out, with a timeout (not retried).
#[derive(Debug, Default)]
pub struct ScriptTransport {
    replies: RefCell<VecDeque<Reply>>,
    sent: Cell<usize>,
    /// The URIs of the requests, in order.
    pub uris: RefCell<Vec<String>>,
}

impl ScriptTransport {
    pub fn new(replies: Vec<Reply>) -> Self {
        ScriptTransport { replies: RefCell::new(replies.into()), ..Default::default() }
    }
    /// How many requests were sent.
    pub fn sent(&self) -> usize {
        self.sent.get()
    }
}

impl HttpTransport for ScriptTransport {
    fn send(
        &self,
        req: http::Request<Vec<u8>>,
        _timeout: Duration,
    ) -> Result<http::Response<Vec<u8>>, TransportError> {
        self.sent.set(self.sent.get() + 1);
        self.uris.borrow_mut().push(req.uri().to_string());
        match self.replies.borrow_mut().pop_front() {
            None => Err(TransportError::Timeout),
            Some(Reply::Failure(e)) => Err(e),
            Some(Reply::Response { status, headers, body }) => {
                let mut b = http::Response::builder().status(status);
                for (name, value) in headers {
                    // a header value http cannot carry is one the provider never sees
                    if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                        b = b.header(name, v);
                    }
                }
                b.body(body).map_err(|_| TransportError::Other("bad response".into()))
            }
        }
    }
}

/// A clock that starts at [`NOW`] and moves on only when asked to sleep.
#[derive(Debug)]
pub struct FuzzClock(Cell<SystemTime>);

impl Default for FuzzClock {
    fn default() -> Self {
        FuzzClock(Cell::new(SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)))
    }
}

impl Clock for FuzzClock {
    fn now(&self) -> SystemTime {
        self.0.get()
    }
    fn sleep(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
}

/// Every code a KMS provider's failure may carry (docs/kms.md).
pub const KMS_CODES: [&str; 7] = [
    "kms_unavailable",
    "kms_denied",
    "kms_key_not_found",
    "kms_unwrap_failed",
    "kms_throttled",
    "kms_bad_response",
    "misconfigured",
];

/// What a provider target wraps and unwraps: version 1 of scheme `pii` of tenant `acme`, and a
/// data key of 32 bytes `0x5a`.
pub struct KeyFixture {
    pub tenant: TenantId,
    pub scheme: SchemeName,
    pub dek: SecretKey,
}

impl Default for KeyFixture {
    fn default() -> Self {
        KeyFixture {
            tenant: TenantId::parse("acme").expect("tenant"),
            scheme: SchemeName::parse("pii").expect("scheme"),
            dek: SecretKey::from_bytes([0x5a; 32]),
        }
    }
}

impl KeyFixture {
    pub fn ctx(&self) -> KeyContext<'_> {
        KeyContext { tenant: &self.tenant, scheme: &self.scheme, version: KeyVersion::new(1).expect("version") }
    }
}

/// The body of the last answer the client got, if it was a 200.
pub fn last_ok_body(script: &[Reply], sent: usize) -> Option<Vec<u8>> {
    match script.get(sent.checked_sub(1)?)? {
        Reply::Response { status: 200, body, .. } => Some(body.clone()),
        _ => None,
    }
}

/// A provider's failure: one of [`KMS_CODES`], and neither its message nor its debug form carries
/// an answer's body or the data key (`dek_encoded`: the key as the provider's wire encodes it).
pub fn check_kms_error(e: &KmsError, script: &[Reply], dek_encoded: String, sources: &[&str]) {
    assert!(KMS_CODES.contains(&e.code()), "{}", e.code());
    let mut secrets = long_bodies(script);
    secrets.push(dek_encoded.into_bytes());
    assert_no_echo("error", &e.to_string(), &secrets, sources);
    assert_no_echo("error detail", &format!("{e:?}"), &secrets, sources);
}

/// The JSON-looking bodies of `replies` (with a `{`, which no fixed message has) that are long
/// enough for an accidental match to be impossible: what an echo of an answer would show.
pub fn long_bodies(replies: &[Reply]) -> Vec<Vec<u8>> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Response { body, .. } if body.len() >= 12 && body.contains(&b'{') => Some(body.clone()),
            _ => None,
        })
        .collect()
}

/// Panics when `text` contains any of `inputs` (as bytes): an error that echoes its input. The
/// fuzzer learns the code's own fixed texts (from comparisons) and feeds them back, so a hit is
/// not counted when every byte of it lies in a run of `PIECE` bytes of `text` that is written in
/// `vocabulary` (the source of the code under test), or is a digit, white space or punctuation
/// (a count or an index a message names, `key #1`, `data[1][0]`, and what joins the message's
/// pieces). A message put together from
/// fixed pieces ("authentication misconfigured: " + "jwt_jwks: " + "key #" + "1" + ": malformed
/// JWK") spells such an input without echoing anything; an input of 24 bytes or more of key
/// material (base64, hex) is not spelled by runs of 4 bytes of Rust source, so a real echo is
/// still caught.
pub fn assert_no_echo(what: &str, text: &str, inputs: &[Vec<u8>], vocabulary: &[&str]) {
    let bytes = text.as_bytes();
    for input in inputs {
        // A short input can be spelled by a message built from fixed pieces ("key #0: malformed
        // JWK" from "key #{i}" and ": malformed JWK"); an echo worth catching is longer.
        if input.len() < 24 || input.len() > bytes.len() {
            continue;
        }
        let Some(at) = bytes.windows(input.len()).position(|w| w == input.as_slice()) else {
            continue;
        };
        let known = with_pieces(vocabulary, |pieces| {
            // byte i lies in a vocabulary run of PIECE bytes iff one of the PIECE windows that
            // contain it is a piece of the vocabulary
            let fixed = |i: usize| {
                (i.saturating_sub(PIECE - 1)..=i)
                    .filter(|&j| j + PIECE <= bytes.len())
                    .any(|j| pieces(&bytes[j..j + PIECE]))
            };
            (at..at + input.len()).all(|i| neutral_byte(bytes[i]) || fixed(i))
        });
        assert!(known, "{what} echoes its input: {text:?}");
    }
}

/// A byte that proves nothing either way: a digit (a count or an index a message names,
/// `data[1][0]`, `key #3`), white space or punctuation (what joins a message's pieces, `#2: E`).
/// What an echo of key material shows is its letters, and those must all be accounted for.
fn neutral_byte(b: u8) -> bool {
    b.is_ascii_digit() || b.is_ascii_punctuation() || b == b' '
}

/// The length of a fixed piece of text (see [`assert_no_echo`]).
const PIECE: usize = 4;

thread_local! {
    /// Every `PIECE`-byte window of each vocabulary, by the vocabulary's address (each target
    /// passes one `const` slice): built once, so that a check costs a few set lookups.
    static PIECES: RefCell<std::collections::HashMap<usize, std::rc::Rc<std::collections::HashSet<[u8; PIECE]>>>> =
        RefCell::default();
}

fn with_pieces<T>(vocabulary: &[&str], f: impl FnOnce(&dyn Fn(&[u8]) -> bool) -> T) -> T {
    let key = vocabulary.as_ptr() as usize;
    let set = PIECES.with(|cache| {
        cache
            .borrow_mut()
            .entry(key)
            .or_insert_with(|| {
                let mut set = std::collections::HashSet::new();
                for v in vocabulary {
                    for w in v.as_bytes().windows(PIECE) {
                        set.insert([w[0], w[1], w[2], w[3]]);
                    }
                }
                std::rc::Rc::new(set)
            })
            .clone()
    });
    f(&|w: &[u8]| <[u8; PIECE]>::try_from(w).is_ok_and(|w| set.contains(&w)))
}
