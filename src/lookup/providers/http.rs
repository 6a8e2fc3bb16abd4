//! Plumbing shared by the HTTP provider clients.
//!
//! One `reqwest::Client` per provider, with connect and read timeouts and the user
//! agent `ipenrich/<version>`. Every transport error is stripped of its URL
//! (`without_url()`: IPGeolocation carries `apiKey` in the query) before it becomes
//! a [`ProviderError`]; messages copied from error bodies are shortened and have the
//! key masked. After each response the rate-limit headers are kept as a
//! [`RateInfo`], readable with `last_rate_info()`, so the lookup engine can pause.
//! Bodies are read chunk by chunk up to a cap ([`MAX_BODY_BYTES`], or
//! [`MAX_DOWNLOAD_BYTES`] for database downloads): a body past it is
//! [`ProviderError::BodyTooLarge`], never an unbounded allocation.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;

use super::ProviderError;
use crate::lookup::time::provider_pause;
use crate::secret::Secret;

/// User agent sent to every provider.
pub const USER_AGENT: &str = concat!("ipenrich/", env!("CARGO_PKG_VERSION"));

/// Longest provider message kept in an error (characters).
const MAX_MESSAGE_CHARS: usize = 300;

/// Largest API response body read. The largest documented answer is an OpenIPApi
/// Enterprise bulk of 5,000 results of about 1 KB each (openipapi-api.txt "Batch
/// size limits"), some 5 MB; 16 MiB leaves room and bounds memory per request.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Largest database download read. OpenIPApi lists its MMDB files at a few to
/// tens of MB (`size_bytes` of `/v1/database/list`); MaxMind's city database is
/// under 100 MB.
pub const MAX_DOWNLOAD_BYTES: usize = 512 << 20;

/// Connection settings of one provider client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Base URL, e.g. `https://ipinsights.io` or a simulator's `http://127.0.0.1:port/x`.
    pub base_url: Url,
    /// API key or bearer token.
    pub key: Secret,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a response.
    pub read_timeout: Duration,
    /// Longest a whole call may take, body included.
    pub request_timeout: Duration,
}

impl HttpSettings {
    /// Default connect timeout (a provider that cannot accept a connection in 2 s is down).
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default read timeout (the documents promise no latency; 5 s covers a bulk call).
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default overall timeout (MMDB downloads of tens of MB need more; set it per use).
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

    /// Settings with default timeouts. The URL must be `http` or `https`, without
    /// user info, query or fragment. The error never repeats the URL.
    pub fn new(base_url: &str, key: Secret) -> Result<Self, ProviderError> {
        let url = Url::parse(base_url).map_err(|e| ProviderError::Config {
            reason: format!("base url does not parse: {e}"),
        })?;
        let problem = if !matches!(url.scheme(), "http" | "https") {
            Some("base url scheme must be http or https")
        } else if !url.username().is_empty() || url.password().is_some() {
            Some("base url must not carry credentials")
        } else if url.query().is_some() || url.fragment().is_some() {
            Some("base url must not have a query or fragment")
        } else if url.cannot_be_a_base() {
            Some("base url cannot be a base")
        } else {
            None
        };
        if let Some(reason) = problem {
            return Err(ProviderError::Config {
                reason: reason.to_owned(),
            });
        }
        Ok(Self {
            base_url: url,
            key,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Replaces the three timeouts.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self.request_timeout = request;
        self
    }
}

/// Rate-limit facts from the headers of the latest response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateInfo {
    /// `X-RateLimit-Limit`: requests allowed in the provider's window.
    pub limit: Option<u64>,
    /// `X-RateLimit-Remaining`: requests left in the window.
    pub remaining: Option<u64>,
    /// `Retry-After`, as seconds or an HTTP date turned into a wait from now.
    pub retry_after: Option<Duration>,
}

impl RateInfo {
    /// Reads the three headers; absent or malformed headers give `None` fields.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_headers_at(headers, SystemTime::now())
    }

    /// As [`RateInfo::from_headers`], with the wall clock given (HTTP dates are wall clock).
    pub fn from_headers_at(headers: &HeaderMap, now: SystemTime) -> Self {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        Self {
            limit: number("x-ratelimit-limit"),
            remaining: number("x-ratelimit-remaining"),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|s| parse_retry_after(s, now)),
        }
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT` (RFC 9110 10.2.3).
/// A date in the past means "now": zero. Any value is clamped to
/// [`MAX_PROVIDER_PAUSE`](crate::lookup::time::MAX_PROVIDER_PAUSE): a number too large even for `u64` is still "a long
/// time", not a missing header (which would mean the short default pause).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(provider_pause(Duration::from_secs(secs)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(provider_pause(
        at.duration_since(now).unwrap_or(Duration::ZERO),
    ))
}

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    /// The body as JSON of type `T`.
    pub fn json<T: DeserializeOwned>(&self, key: &Secret) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| ProviderError::Decode {
            reason: redact(&e.to_string(), key),
        })
    }

    /// The `Retry-After` of this response.
    pub fn retry_after(&self) -> Option<Duration> {
        RateInfo::from_headers(&self.headers).retry_after
    }
}

/// One provider's HTTP client.
pub(crate) struct HttpClient {
    provider: &'static str,
    client: reqwest::Client,
    base: Url,
    key: Secret,
    rate: Mutex<Option<RateInfo>>,
}

impl HttpClient {
    pub fn new(provider: &'static str, settings: &HttpSettings) -> Result<Self, ProviderError> {
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.read_timeout)
            .timeout(settings.request_timeout)
            // A redirect would replay the key to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ProviderError::Config {
                reason: format!("http client: {}", e.without_url()),
            })?;
        Ok(Self {
            provider,
            client,
            base: settings.base_url.clone(),
            key: settings.key.clone(),
            rate: Mutex::new(None),
        })
    }

    pub fn key(&self) -> &Secret {
        &self.key
    }

    /// The base URL with `segments` appended, each percent-encoded as one segment.
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    pub fn get(&self, url: Url) -> RequestBuilder {
        self.client.get(url)
    }

    pub fn post(&self, url: Url) -> RequestBuilder {
        self.client.post(url)
    }

    /// A header value holding the key, marked sensitive so `Debug` of the request hides it.
    pub fn key_header(&self, prefix: &str) -> Result<HeaderValue, ProviderError> {
        let mut value =
            HeaderValue::from_str(&format!("{prefix}{}", self.key.expose())).map_err(|_| {
                ProviderError::Config {
                    reason: "api key is not a valid header value".to_owned(),
                }
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Adds the key as header `name`.
    pub fn with_key_header(
        &self,
        request: RequestBuilder,
        name: HeaderName,
        prefix: &str,
    ) -> Result<RequestBuilder, ProviderError> {
        Ok(request.header(name, self.key_header(prefix)?))
    }

    /// Sends and reads the whole body, up to [`MAX_BODY_BYTES`]; records the
    /// rate-limit headers.
    pub async fn send(&self, request: RequestBuilder) -> Result<RawResponse, ProviderError> {
        self.send_limited(request, MAX_BODY_BYTES).await
    }

    /// As [`HttpClient::send`], reading at most `limit` bytes of body: a longer
    /// one (announced by `Content-Length` or found while reading) is
    /// [`ProviderError::BodyTooLarge`], and the connection is dropped unread.
    pub async fn send_limited(
        &self,
        request: RequestBuilder,
        limit: usize,
    ) -> Result<RawResponse, ProviderError> {
        let mut response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let rate = RateInfo::from_headers(&headers);
        if let Ok(mut last) = self.rate.lock() {
            *last = Some(rate);
        }
        let too_large = || {
            tracing::debug!(
                provider = self.provider,
                status = status.as_u16(),
                limit,
                "provider body over the cap"
            );
            ProviderError::BodyTooLarge { limit }
        };
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(too_large());
        }
        // `announced <= limit`, a usize: the cast cannot truncate.
        let mut body = Vec::with_capacity(announced as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if chunk.len() > limit - body.len() {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let body = Bytes::from(body);
        tracing::trace!(
            provider = self.provider,
            status = status.as_u16(),
            bytes = body.len(),
            remaining = rate.remaining,
            "provider answered"
        );
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// The rate-limit headers of the latest response (of any call on this client).
    pub fn last_rate_info(&self) -> Option<RateInfo> {
        self.rate.lock().ok().and_then(|r| *r)
    }

    fn transport_error(&self, error: reqwest::Error) -> ProviderError {
        let error = error.without_url();
        let mapped = if error.is_timeout() {
            ProviderError::Timeout
        } else if error.is_connect() {
            ProviderError::Connect { source: error }
        } else {
            ProviderError::Transport { source: error }
        };
        tracing::debug!(provider = self.provider, error = %mapped, "provider call failed");
        mapped
    }

    /// Shortens and masks a provider message.
    pub fn redact(&self, message: &str) -> String {
        redact(message, &self.key)
    }
}

/// Masks the key (and any 8-character prefix of it) and cuts the text to a few
/// hundred characters. Providers echo input in their messages; the key must not ride along.
pub(crate) fn redact(message: &str, key: &Secret) -> String {
    let key = key.expose();
    // Control characters go first: a NUL inside an echoed key must not hide it
    // from the masking (found by the provider_responses fuzz property).
    let message: String = message.chars().filter(|c| !c.is_control()).collect();
    let mut text = message.replace(key, "***");
    let prefix: String = key.chars().take(8).collect();
    if prefix.chars().count() == 8 {
        text = text.replace(&prefix, "***");
    }
    let mut out: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.push_str("...");
    }
    out
}

/// A short description of a body that is not the documented error JSON.
pub(crate) fn body_snippet(body: &[u8], key: &Secret) -> String {
    if body.is_empty() {
        return "empty body".to_owned();
    }
    redact(&String::from_utf8_lossy(body), key)
}

/// A provider's own reading of one status: `(status, error from the message)`.
pub(crate) type StatusRule = (u16, fn(String) -> ProviderError);

/// The one status -> error mapping of the HTTP providers: the provider's `own`
/// statuses first, then 400 invalid input, 401 unauthorised, 429 rate limited
/// (honouring `Retry-After`), else by class ([`fallback_status_error`]). The message
/// comes from the body, the key redacted.
pub(crate) fn status_error(
    response: &RawResponse,
    key: &Secret,
    own: &[StatusRule],
) -> Result<(), ProviderError> {
    let status = response.status;
    if status.is_success() {
        return Ok(());
    }
    let message = body_message(&response.body, key);
    let code = status.as_u16();
    if let Some((_, error)) = own.iter().find(|(c, _)| *c == code) {
        return Err(error(message));
    }
    Err(match code {
        400 => ProviderError::InvalidInput { message },
        401 => ProviderError::Unauthorized { message },
        429 => ProviderError::RateLimited {
            retry_after: response.retry_after(),
        },
        _ => fallback_status_error(status, message),
    })
}

/// Provider-independent statuses: 5xx, 499 and anything unlisted.
pub(crate) fn fallback_status_error(status: StatusCode, message: String) -> ProviderError {
    let code = status.as_u16();
    match code {
        499 => ProviderError::Timeout,
        500..=599 => ProviderError::Server {
            status: code,
            message,
        },
        _ => ProviderError::UnexpectedStatus {
            status: code,
            message,
        },
    }
}

/// The human message of a JSON error body: `message`, `error`, `detail` or the
/// Cloudflare `errors[].message`, else a snippet of the raw body.
pub(crate) fn body_message(body: &[u8], key: &Secret) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let pick = |name: &str| v.get(name).and_then(|m| m.as_str()).map(str::to_owned);
            pick("message")
                .or_else(|| pick("error"))
                .or_else(|| pick("detail"))
                .or_else(|| {
                    let errors = v.get("errors")?.as_array()?;
                    let joined: Vec<&str> = errors
                        .iter()
                        .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
                        .collect();
                    (!joined.is_empty()).then(|| joined.join("; "))
                })
        });
    match text {
        Some(t) => redact(&t, key),
        None => body_snippet(body, key),
    }
}

// ---- normalisation helpers shared by the clients ----

/// A non-empty string as a shared string.
pub(crate) fn text(value: Option<String>) -> Option<std::sync::Arc<str>> {
    value
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(std::sync::Arc::from)
}

/// As [`text`], lowercased (registry and network-type words: `RIPE` -> `ripe`).
pub(crate) fn lower(value: Option<String>) -> Option<std::sync::Arc<str>> {
    text(value.map(|s| s.to_ascii_lowercase()))
}

/// `"AS15169"`, `"as15169"`, `"15169"` -> 15169.
pub(crate) fn parse_as_number(value: &str) -> Option<u32> {
    let v = value.trim();
    let digits = v
        .strip_prefix("AS")
        .or_else(|| v.strip_prefix("as"))
        .or_else(|| v.strip_prefix("As"))
        .unwrap_or(v);
    digits.trim().parse().ok()
}

/// An AS number as a provider may send it: a bare number or an `"AS..."` string.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(untagged)]
pub enum AsNumber {
    /// `15169`
    Number(u32),
    /// `"AS15169"` (or any text; unparsable text gives no number)
    Text(String),
}

impl AsNumber {
    /// The number without prefix.
    pub fn value(&self) -> Option<u32> {
        match self {
            AsNumber::Number(n) => Some(*n),
            AsNumber::Text(t) => parse_as_number(t),
        }
    }
}

/// A score on a 0-100 scale, rounded and clamped.
pub(crate) fn score_0_100(value: f64) -> Option<u8> {
    value
        .is_finite()
        .then(|| value.round().clamp(0.0, 100.0) as u8)
}

/// A 0.0-1.0 fraction as a 0-100 score (IPTrust `asn.risk`).
pub(crate) fn fraction_to_score(value: f64) -> Option<u8> {
    score_0_100(value * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lookup::time::MAX_PROVIDER_PAUSE;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn rate_info_reads_the_documented_headers() {
        // ipinsights documents "X-RateLimit-Limit: 600 X-RateLimit-Remaining: 95".
        let info = RateInfo::from_headers(&headers(&[
            ("X-RateLimit-Limit", "600"),
            ("X-RateLimit-Remaining", "95"),
        ]));
        assert_eq!(
            info,
            RateInfo {
                limit: Some(600),
                remaining: Some(95),
                retry_after: None
            }
        );
        assert_eq!(
            RateInfo::from_headers(&HeaderMap::new()),
            RateInfo::default()
        );
        let bad = RateInfo::from_headers(&headers(&[("X-RateLimit-Limit", "lots")]));
        assert_eq!(bad.limit, None);
    }

    #[test]
    fn retry_after_as_seconds_and_as_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        // Regression (issue 8 item 6): 2^63 s parsed as is and later panicked the
        // engine at `Instant + Duration`; more digits than u64 holds gave `None`,
        // i.e. the short default pause for a provider asking for a very long one.
        for absurd in [
            "9223372036854775808",
            "18446744073709551615",
            "99999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(
                parse_retry_after(absurd, now),
                Some(MAX_PROVIDER_PAUSE),
                "{absurd}"
            );
        }
        let info = RateInfo::from_headers_at(&headers(&[("Retry-After", "7")]), now);
        assert_eq!(info.retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn redact_masks_key_and_prefix_and_cuts() {
        let key = Secret::new("abcdefgh12345").unwrap();
        assert_eq!(redact("bad key abcdefgh12345!", &key), "bad key ***!");
        assert_eq!(redact("bad key abcdefghXX", &key), "bad key ***XX");
        let long = "x".repeat(1000);
        assert_eq!(redact(&long, &key).chars().count(), MAX_MESSAGE_CHARS + 3);
        assert_eq!(redact("a\nb", &key), "ab");
    }

    #[test]
    fn settings_reject_unsafe_base_urls_without_echoing_them() {
        let key = Secret::new("k").unwrap();
        for bad in [
            "ftp://x",
            "http://user:pw@host",
            "http://h/?apiKey=zzz",
            "not a url",
        ] {
            let err = HttpSettings::new(bad, key.clone()).unwrap_err();
            assert!(matches!(err, ProviderError::Config { .. }), "{bad}");
            assert!(!err.to_string().contains("zzz"));
        }
        assert!(HttpSettings::new("http://127.0.0.1:8080/prefix", key).is_ok());
    }

    #[test]
    fn conversions() {
        assert_eq!(parse_as_number("AS15169"), Some(15169));
        assert_eq!(parse_as_number("as64512"), Some(64512));
        assert_eq!(parse_as_number("24940"), Some(24940));
        assert_eq!(parse_as_number("ASX"), None);
        assert_eq!(fraction_to_score(0.9), Some(90));
        assert_eq!(fraction_to_score(1.7), Some(100));
        assert_eq!(fraction_to_score(f64::NAN), None);
        assert_eq!(score_0_100(-3.0), Some(0));
        assert_eq!(lower(Some("RIPE".into())).as_deref(), Some("ripe"));
        assert_eq!(text(Some("  ".into())), None);
    }

    #[test]
    fn body_message_picks_the_documented_fields() {
        let key = Secret::new("secretkey123").unwrap();
        assert_eq!(body_message(br#"{"message":"m"}"#, &key), "m");
        assert_eq!(body_message(br#"{"error":"e","status":401}"#, &key), "e");
        assert_eq!(
            body_message(
                br#"{"success":false,"errors":[{"code":1,"message":"a"},{"message":"b"}]}"#,
                &key
            ),
            "a; b"
        );
        assert_eq!(body_message(b"", &key), "empty body");
        assert_eq!(
            body_message(b"<html>secretkey123</html>", &key),
            "<html>***</html>"
        );
    }

    #[test]
    fn url_appends_encoded_segments() {
        let settings =
            HttpSettings::new("http://127.0.0.1:1/sim/", Secret::new("k").unwrap()).unwrap();
        let client = HttpClient::new("t", &settings).unwrap();
        assert_eq!(
            client.url(&["v1", "lookup", "2001:db8::1"]).as_str(),
            "http://127.0.0.1:1/sim/v1/lookup/2001:db8::1"
        );
        assert_eq!(
            client.url(&["a/b"]).as_str(),
            "http://127.0.0.1:1/sim/a%2Fb"
        );
    }
}
