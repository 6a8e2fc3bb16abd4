//! Downloading a database (`ipenrich mmdb fetch`), for a container beside ipenrich: a
//! Kubernetes init container that fetches once, or a sidecar that fetches every so
//! often. The running pipeline's MMDB provider reloads the file by itself
//! (`reload_interval`), so nothing needs to be signalled.
//!
//! Sources:
//! - OpenIPApi: `GET {base}/v1/database/download/{edition}` with the key in
//!   `X-API-Key`; the body is the MMDB itself (openipapi-api.txt "GET
//!   /v1/database/download/{source}": ETag and If-None-Match, 10 downloads per source
//!   a day, `429` with `Retry-After` past that).
//! - MaxMind GeoLite2: `GET {base}/geoip/databases/{edition}/download?suffix=tar.gz`
//!   with HTTP Basic auth (account ID, licence key); the answer redirects to a
//!   presigned URL whose body is a `.tar.gz` ([`super::archive`]).
//!
//! Contract:
//! - `out` is replaced only by a complete download that the project's reader opens and
//!   verifies ([`Database::read`]): the body goes to a temporary file beside `out`, is
//!   checked, synced, made readable by all (another container may run as another
//!   user), renamed over `out` (atomic) and the directory synced. A failed or killed
//!   fetch leaves `out` as it was; its leftovers are removed at the next start.
//! - The ETag of the installed file is kept in `<out>.etag`. A request is conditional
//!   (`If-None-Match`) only while `out` holds a valid database, so a `304` keeps a good
//!   file and spends no download of the day's quota, across restarts too.
//! - Keys travel only in headers marked sensitive. A redirect to another host is
//!   followed without `Authorization` (reqwest drops it); OpenIPApi's key header is
//!   not one reqwest knows, so its redirects are followed only on the same host.
//!   Never from https to http. Errors show URLs without userinfo or query and
//!   transport errors without their URL (a presigned URL carries a signature).
//! - Every error has a [`Class`]: what [`Fetcher::run_every`] does next depends on it.

use std::future::Future;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ETAG, IF_NONE_MATCH, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use tempfile::NamedTempFile;
use tokio::io::AsyncWriteExt;
use tracing::{error, info, warn};

use super::archive::{self, ArchiveError};
pub use super::install::DatabaseInfo;
use super::install::{inspect, plain_etag, Target};
use super::reader::MmdbError;
use crate::lookup::providers::http::{parse_retry_after, USER_AGENT};
use crate::secret::{redact_url, Secret, SecretError};
use crate::telemetry::error_chain;

/// Largest database (and largest download) accepted. GeoLite2-City is under 100 MB
/// and OpenIPApi lists its files at tens of MB; the reader holds a database in
/// memory, so this also bounds the memory of a fetch.
pub const MAX_DATABASE_BYTES: u64 = 512 << 20;

/// Largest unpacked archive: the database and its licence and readme files.
const MAX_UNPACKED_BYTES: u64 = 2 * MAX_DATABASE_BYTES;

/// A server that accepts no connection in 10 s is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one download may take: 512 MB at under 300 kB/s is not worth waiting for.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Redirects followed: MaxMind answers with one.
const MAX_REDIRECTS: usize = 5;

/// First wait after a transient failure; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(5);
/// Longest wait between retries of a transient failure (and at most the interval).
const MAX_RETRY: Duration = Duration::from_secs(5 * 60);
/// Longest `Retry-After` obeyed: the download quota is per day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Environment variable of the OpenIPApi key.
pub const OPENIPAPI_KEY_VAR: &str = "OPENIPAPI_API_KEY";
/// Environment variable of the MaxMind account ID.
pub const MAXMIND_ACCOUNT_VAR: &str = "MAXMIND_ACCOUNT_ID";
/// Environment variable of the MaxMind licence key.
pub const MAXMIND_LICENSE_VAR: &str = "MAXMIND_LICENSE_KEY";

/// Where a database comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// OpenIPApi's database downloads (raw MMDB).
    Openipapi,
    /// MaxMind's GeoLite2 downloads (`.tar.gz`).
    Geolite2,
}

impl Source {
    /// The name in logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Source::Openipapi => "openipapi",
            Source::Geolite2 => "geolite2",
        }
    }

    /// The production base URL.
    pub fn default_base(self) -> &'static str {
        match self {
            Source::Openipapi => "https://api.openipapi.com",
            Source::Geolite2 => "https://download.maxmind.com",
        }
    }
}

/// The credentials of a source.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The OpenIPApi key.
    OpenIpApi(Secret),
    /// The MaxMind account ID and licence key.
    MaxMind { account: Secret, license: Secret },
}

impl Credentials {
    /// Reads the credentials of `source` from [`OPENIPAPI_KEY_VAR`], or
    /// [`MAXMIND_ACCOUNT_VAR`] and [`MAXMIND_LICENSE_VAR`].
    pub fn from_env(source: Source) -> Result<Credentials, FetchError> {
        let missing = |error| FetchError::Credentials {
            source_name: source.name(),
            error,
        };
        Ok(match source {
            Source::Openipapi => {
                Credentials::OpenIpApi(Secret::from_env(OPENIPAPI_KEY_VAR).map_err(missing)?)
            }
            Source::Geolite2 => Credentials::MaxMind {
                account: Secret::from_env(MAXMIND_ACCOUNT_VAR).map_err(missing)?,
                license: Secret::from_env(MAXMIND_LICENSE_VAR).map_err(missing)?,
            },
        })
    }
}

/// What to fetch and where to put it.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub source: Source,
    /// The edition or source name: `asn`, `GeoLite2-City`, ...
    pub edition: String,
    /// The database file to replace.
    pub out: PathBuf,
    /// Base URL instead of the production one (a mirror, a test server).
    pub base: Option<String>,
}

/// What decides the next step after a failed fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 401 or 403: the key or the plan is wrong; retrying soon cannot help.
    Refused,
    /// The network, a 5xx, a 408 or a 429: retried after a back-off (or `Retry-After`).
    Transient,
    /// Anything else (a 404, a broken download, a local file error): tried again at
    /// the normal interval, since each retry may spend a download of the quota.
    Persistent,
}

/// Why a fetch failed. Never carries a key, a presigned URL or a URL's userinfo.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// A credential is missing from the environment or unusable.
    #[error("no usable credentials for {source_name}")]
    Credentials {
        source_name: &'static str,
        #[source]
        error: SecretError,
    },
    /// The key cannot travel in an HTTP header (non-ASCII characters).
    #[error("the {source_name} key is not a valid HTTP header value")]
    KeyNotHeader { source_name: &'static str },
    /// The edition would not be one path segment.
    #[error("invalid edition {0:?}: use letters, digits, '.', '-' and '_', not starting with '.'")]
    Edition(String),
    /// `--url` is not an http(s) URL.
    #[error("invalid base url {url}: {reason}")]
    Url { url: String, reason: String },
    /// `--out` names no file.
    #[error("invalid output path {}: it names no file", .0.display())]
    Out(PathBuf),
    /// The HTTP client could not be built.
    #[error("http client")]
    Client(#[source] reqwest::Error),
    /// The request or the body failed on the way (URL stripped).
    #[error("request to {url} failed")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// 401 or 403.
    #[error("{url} refused the credentials: HTTP {status}{}", code_note(.code))]
    Refused {
        url: String,
        status: u16,
        code: Option<String>,
    },
    /// Any other status than 200 (and 304 to a conditional request).
    #[error("{url} answered HTTP {status}{}", code_note(.code))]
    Status {
        url: String,
        status: u16,
        code: Option<String>,
        retry_after: Option<Duration>,
    },
    /// The download is larger than [`MAX_DATABASE_BYTES`].
    #[error("the download is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    /// The archive holds no usable database.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The download is not a database the reader accepts.
    #[error("the download is not a valid database")]
    Invalid(#[source] MmdbError),
    /// A local file could not be written, synced or renamed.
    #[error("{what} {}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The background task that checks and installs the file did not finish.
    #[error("installing the download: {0}")]
    Task(String),
}

/// ` (code)` after a status, when the body named an error code.
fn code_note(code: &Option<String>) -> String {
    code.as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default()
}

impl FetchError {
    /// What to do next (see [`Class`]).
    pub fn class(&self) -> Class {
        match self {
            FetchError::Refused { .. } => Class::Refused,
            FetchError::Transport { .. } => Class::Transient,
            FetchError::Status { status, .. } if *status == 408 || *status == 429 => {
                Class::Transient
            }
            FetchError::Status { status, .. } if *status >= 500 => Class::Transient,
            _ => Class::Persistent,
        }
    }

    /// The server's `Retry-After`, if it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How a fetch ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// A new database is at `out`.
    Updated(DatabaseInfo),
    /// `304 Not Modified`: the database at `out` is current.
    Unchanged,
}

/// Fetches one database into one file.
pub struct Fetcher {
    client: reqwest::Client,
    source: Source,
    edition: String,
    url: Url,
    credentials: Credentials,
    target: Target,
}

impl Fetcher {
    /// Checks the settings, builds the client and removes what a killed fetch left.
    pub fn new(settings: FetchSettings, credentials: Credentials) -> Result<Fetcher, FetchError> {
        let FetchSettings {
            source,
            edition,
            out,
            base,
        } = settings;
        if !valid_edition(&edition) {
            return Err(FetchError::Edition(edition));
        }
        let url = download_url(source, base.as_deref(), &edition)?;
        let target = Target::new(&out).ok_or(FetchError::Out(out))?;
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(redirect_policy(source))
            .build()
            .map_err(|e| FetchError::Client(e.without_url()))?;
        target.remove_leftovers();
        Ok(Fetcher {
            client,
            source,
            edition,
            url,
            credentials,
            target,
        })
    }

    /// The file this fetcher replaces.
    pub fn out(&self) -> &Path {
        self.target.out()
    }

    /// The request URL, fit to print (no userinfo, no query).
    fn shown_url(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.set_fragment(None);
        redact_url(url.as_str())
    }

    /// One fetch: conditional on the stored ETag while `out` is valid; on `200` the
    /// download is checked and installed.
    pub async fn fetch(&self) -> Result<Fetched, FetchError> {
        let etag = match self.valid_database().await {
            Some(_) => self.target.stored_etag(),
            None => None,
        };
        let response = self.request(etag.as_deref()).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return match etag {
                Some(_) => Ok(Fetched::Unchanged),
                // Nothing was asked to be unchanged: there is no database to keep.
                None => Err(FetchError::Status {
                    url: self.shown_url(),
                    status: 304,
                    code: None,
                    retry_after: None,
                }),
            };
        }
        let new_etag = etag_of(response.headers());
        let part = self.download(response).await?;
        let (source, edition, target) = (self.source, self.edition.clone(), self.target.clone());
        let info = tokio::task::spawn_blocking(move || {
            let database = match source {
                Source::Openipapi => part,
                Source::Geolite2 => unpack(&target, part, &edition)?,
            };
            target.install(database, new_etag.as_deref())
        })
        .await
        .map_err(|e| FetchError::Task(e.to_string()))??;
        Ok(Fetched::Updated(info))
    }

    /// The database at `out`, when there is one the reader accepts.
    pub async fn valid_database(&self) -> Option<DatabaseInfo> {
        let out = self.target.out().to_owned();
        tokio::task::spawn_blocking(move || inspect(&out).ok())
            .await
            .ok()
            .flatten()
    }

    /// Sends the request; `Ok` is a `200` or a `304`, every other status an error.
    async fn request(&self, etag: Option<&str>) -> Result<reqwest::Response, FetchError> {
        let mut request = self.client.get(self.url.clone());
        request = match &self.credentials {
            Credentials::OpenIpApi(key) => {
                let mut value =
                    HeaderValue::from_str(key.expose()).map_err(|_| FetchError::KeyNotHeader {
                        source_name: self.source.name(),
                    })?;
                value.set_sensitive(true);
                request.header("x-api-key", value)
            }
            Credentials::MaxMind { account, license } => {
                request.basic_auth(account.expose(), Some(license.expose()))
            }
        };
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag);
        }
        let response = request.send().await.map_err(|e| FetchError::Transport {
            url: self.shown_url(),
            source: e.without_url(),
        })?;
        let status = response.status();
        if status == StatusCode::OK || status == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // A redirect still standing was refused by `redirect_policy`: say so.
        let code = if status.is_redirection() {
            Some(
                "redirect not followed: another host with the key, https to http, or too many"
                    .to_owned(),
            )
        } else {
            error_code(response).await
        };
        let (url, status) = (self.shown_url(), status.as_u16());
        Err(match status {
            401 | 403 => FetchError::Refused { url, status, code },
            _ => FetchError::Status {
                url,
                status,
                code,
                retry_after,
            },
        })
    }

    /// Streams the body into a temporary file beside `out`, up to the cap.
    async fn download(&self, mut response: reqwest::Response) -> Result<NamedTempFile, FetchError> {
        let too_large = FetchError::TooLarge {
            limit: MAX_DATABASE_BYTES,
        };
        if response
            .content_length()
            .is_some_and(|n| n > MAX_DATABASE_BYTES)
        {
            return Err(too_large);
        }
        let part = self.target.temp_file()?;
        let write_err = |source| FetchError::File {
            what: "cannot write",
            path: part.path().to_owned(),
            source,
        };
        let handle = part.as_file().try_clone().map_err(write_err)?;
        let mut file = tokio::fs::File::from_std(handle);
        let mut total = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(|e| FetchError::Transport {
            url: self.shown_url(),
            source: e.without_url(),
        })? {
            total += chunk.len() as u64;
            if total > MAX_DATABASE_BYTES {
                return Err(too_large);
            }
            file.write_all(&chunk).await.map_err(write_err)?;
        }
        file.flush().await.map_err(write_err)?;
        Ok(part)
    }

    /// Fetches now and then every `interval` until `stop` completes. Failures are
    /// logged and retried, never returned: transient ones after a back-off from 5 s
    /// doubling to 5 minutes (or the server's `Retry-After`), the rest at the interval.
    pub async fn run_every(&self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut backoff = Backoff::new(interval);
        loop {
            let outcome = tokio::select! {
                _ = &mut stop => return,
                outcome = self.fetch() => outcome,
            };
            let wait = match outcome {
                Ok(fetched) => {
                    self.log_fetched(&fetched);
                    backoff.reset();
                    interval
                }
                Err(e) if e.class() == Class::Transient => {
                    let wait = backoff.after_transient(e.retry_after());
                    warn!(error = %error_chain(&e), source = self.source.name(), edition = %self.edition, retry_in = ?wait, "database fetch failed; retrying");
                    wait
                }
                Err(e) => {
                    error!(error = %error_chain(&e), source = self.source.name(), edition = %self.edition, retry_in = ?interval, "database fetch failed; trying again at the next interval");
                    backoff.reset();
                    interval
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Logs a successful fetch.
    pub fn log_fetched(&self, fetched: &Fetched) {
        match fetched {
            Fetched::Updated(db) => info!(
                source = self.source.name(),
                edition = %self.edition,
                out = %self.out().display(),
                database_type = %db.database_type,
                build_epoch = db.build_epoch,
                bytes = db.bytes,
                "database updated"
            ),
            Fetched::Unchanged => info!(
                source = self.source.name(),
                edition = %self.edition,
                out = %self.out().display(),
                "database unchanged (304 Not Modified)"
            ),
        }
    }
}

/// The waits of [`Fetcher::run_every`] after transient failures.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starts at [`FIRST_RETRY`] and doubles up to [`MAX_RETRY`], never past `interval`.
    fn new(interval: Duration) -> Backoff {
        let cap = MAX_RETRY.min(interval);
        Backoff {
            next: FIRST_RETRY.min(cap),
            cap,
        }
    }

    /// Back to the first step (after a success, or a failure waited out at the interval).
    fn reset(&mut self) {
        self.next = FIRST_RETRY.min(self.cap);
    }

    /// The wait after a transient failure: the server's `Retry-After` (at most
    /// [`MAX_RETRY_AFTER`]) or the back-off step, whichever is longer; the step doubles.
    fn after_transient(&mut self, retry_after: Option<Duration>) -> Duration {
        let asked = retry_after.map_or(Duration::ZERO, |d| d.min(MAX_RETRY_AFTER));
        let wait = asked.max(self.next);
        self.next = self.next.saturating_mul(2).min(self.cap);
        wait
    }
}

/// The database of `edition` out of the downloaded archive, in a file of its own.
fn unpack(
    target: &Target,
    archive: NamedTempFile,
    edition: &str,
) -> Result<NamedTempFile, FetchError> {
    let mut database = target.temp_file()?;
    let file = archive.reopen().map_err(|source| FetchError::File {
        what: "cannot read",
        path: archive.path().to_owned(),
        source,
    })?;
    archive::extract_database(
        BufReader::new(file),
        edition,
        database.as_file_mut(),
        MAX_DATABASE_BYTES,
        MAX_UNPACKED_BYTES,
    )?;
    Ok(database)
}

/// Letters, digits, `.`, `-`, `_`; not empty, not starting with `.`, at most 100.
fn valid_edition(edition: &str) -> bool {
    !edition.is_empty()
        && edition.len() <= 100
        && !edition.starts_with('.')
        && edition
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The download URL of `edition` under `base` (default: the source's production URL).
fn download_url(source: Source, base: Option<&str>, edition: &str) -> Result<Url, FetchError> {
    let text = base.unwrap_or(source.default_base());
    let bad = |reason: &str| FetchError::Url {
        url: redact_url(text),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("use http or https"));
    }
    let segments: &[&str] = match source {
        Source::Openipapi => &["v1", "database", "download", edition],
        Source::Geolite2 => &["geoip", "databases", edition, "download"],
    };
    url.path_segments_mut()
        .map_err(|()| bad("cannot be a base"))?
        .pop_if_empty()
        .extend(segments);
    url.set_query(match source {
        Source::Openipapi => None,
        Source::Geolite2 => Some("suffix=tar.gz"),
    });
    Ok(url)
}

/// Follows at most [`MAX_REDIRECTS`] redirects, never from https to http, and for
/// OpenIPApi only on the same host and port (its key header would travel along).
fn redirect_policy(source: Source) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        let Some(previous) = attempt.previous().last() else {
            return attempt.follow();
        };
        let next = attempt.url();
        let downgrade = previous.scheme() == "https" && next.scheme() != "https";
        let same_origin = previous.host_str() == next.host_str()
            && previous.port_or_known_default() == next.port_or_known_default();
        let key_would_leak = source == Source::Openipapi && !same_origin;
        if attempt.previous().len() > MAX_REDIRECTS || downgrade || key_would_leak {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// The `error` code of a JSON error body (OpenIPApi's `{"error": "invalid_api_key"}`),
/// if it is a short identifier; the body is read up to 4 KiB.
async fn error_code(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() > 4096 {
            return None;
        }
    }
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let code = value.get("error")?.as_str()?;
    let plain = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    plain.then(|| code.to_owned())
}

/// The response's ETag, if it is a header value worth sending back.
fn etag_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(plain_etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_urls_follow_each_api() {
        let url = download_url(Source::Openipapi, None, "asn").unwrap();
        assert_eq!(
            url.as_str(),
            "https://api.openipapi.com/v1/database/download/asn"
        );
        let url = download_url(Source::Geolite2, None, "GeoLite2-ASN").unwrap();
        assert_eq!(
            url.as_str(),
            "https://download.maxmind.com/geoip/databases/GeoLite2-ASN/download?suffix=tar.gz"
        );
        // A base with a path prefix (the simulator serves OpenIPApi under /openipapi).
        let url = download_url(
            Source::Openipapi,
            Some("http://127.0.0.1:8600/openipapi/"),
            "city-geolite2",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8600/openipapi/v1/database/download/city-geolite2"
        );
    }

    #[test]
    fn bad_base_urls_are_refused_without_their_secrets() {
        for base in ["ftp://host/x", "not a url", "mailto:someone@example.com"] {
            assert!(
                matches!(
                    download_url(Source::Openipapi, Some(base), "asn"),
                    Err(FetchError::Url { .. })
                ),
                "{base}"
            );
        }
        let err = download_url(Source::Geolite2, Some("gopher://u:s3cret@host/"), "x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[test]
    fn editions_are_one_plain_path_segment() {
        for ok in ["asn", "city-geolite2", "GeoLite2-ASN", "GeoIP2_City.v2"] {
            assert!(valid_edition(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc",
            "a/b",
            "a b",
            "a?b",
            "é",
            &"x".repeat(101),
        ] {
            assert!(!valid_edition(bad), "{bad}");
        }
    }

    #[test]
    fn failures_are_classed_by_what_helps() {
        let status = |status| FetchError::Status {
            url: "u".into(),
            status,
            code: None,
            retry_after: None,
        };
        assert_eq!(status(429).class(), Class::Transient);
        assert_eq!(status(408).class(), Class::Transient);
        assert_eq!(status(503).class(), Class::Transient);
        assert_eq!(status(404).class(), Class::Persistent);
        assert_eq!(status(302).class(), Class::Persistent);
        let refused = FetchError::Refused {
            url: "u".into(),
            status: 403,
            code: Some("plan_upgrade_required".into()),
        };
        assert_eq!(refused.class(), Class::Refused);
        assert_eq!(
            refused.to_string(),
            "u refused the credentials: HTTP 403 (plan_upgrade_required)"
        );
        assert_eq!(
            FetchError::TooLarge { limit: 1 }.class(),
            Class::Persistent,
            "a broken download is not retried at once: each retry may spend quota"
        );
    }

    #[test]
    fn transient_failures_back_off_and_honour_retry_after() {
        let secs = Duration::from_secs;
        let mut b = Backoff::new(secs(3600));
        let steps: Vec<u64> = (0..9).map(|_| b.after_transient(None).as_secs()).collect();
        assert_eq!(steps, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        b.reset();
        assert_eq!(
            b.after_transient(Some(secs(120))),
            secs(120),
            "Retry-After wins"
        );
        assert_eq!(
            b.after_transient(Some(secs(1))),
            secs(10),
            "never below the step"
        );
        assert_eq!(
            b.after_transient(Some(secs(7 * 24 * 3600))),
            MAX_RETRY_AFTER,
            "a day at most: the quota is per day"
        );
        // A short interval caps the back-off: a retry never waits past the next fetch.
        let mut short = Backoff::new(secs(2));
        assert_eq!(short.after_transient(None), secs(2));
        assert_eq!(short.after_transient(None), secs(2));
    }

    #[test]
    fn credentials_are_never_printed() {
        // Reading them from the environment is tested on the binary (tests/mmdb_fetch.rs),
        // where the environment is the test's own.
        let creds = Credentials::MaxMind {
            account: Secret::new("12345").unwrap(),
            license: Secret::new("l1cense-k3y").unwrap(),
        };
        let text = format!("{creds:?}");
        assert!(
            !text.contains("l1cense") && !text.contains("12345"),
            "{text}"
        );
    }
}
