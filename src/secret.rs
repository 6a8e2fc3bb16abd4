//! Secrets (API keys) in a redacting type.
//!
//! A [`Secret`] is read once at start-up from an environment variable or a mounted
//! file (Kubernetes secret volumes end the file with a newline, which is trimmed).
//! Its `Debug` and `Display` print `***`, it has no `Serialize`, and errors name the
//! variable or the path, never the value. The only way to the text is
//! [`Secret::expose`], meant for the one place that builds a request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::KeySource;

/// Why a secret could not be loaded. Never carries the secret itself.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {var} is not set")]
    EnvMissing { var: String },
    /// The environment variable holds bytes that are not UTF-8.
    #[error("environment variable {var} is not valid unicode")]
    EnvNotUnicode { var: String },
    /// The file could not be read.
    #[error("cannot read secret file {}", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds bytes that are not UTF-8.
    #[error("secret file {} is not valid utf-8", path.display())]
    FileNotUtf8 { path: PathBuf },
    /// The value is empty (after trimming the trailing newline).
    #[error("secret from {origin} is empty")]
    Empty { origin: String },
    /// The value contains whitespace or control characters, which no API key has
    /// and which could not travel in an HTTP header anyway.
    #[error("secret from {origin} contains whitespace or control characters")]
    BadCharacters { origin: String },
}

/// An API key or token. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value; `origin` names where it came from, for the error message only.
    fn checked(value: &str, origin: String) -> Result<Self, SecretError> {
        if value.is_empty() {
            return Err(SecretError::Empty { origin });
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(SecretError::BadCharacters { origin });
        }
        Ok(Self(Arc::from(value)))
    }

    /// Wraps a literal value (tests, simulator defaults).
    pub fn new(value: &str) -> Result<Self, SecretError> {
        Self::checked(value, "a literal".to_owned())
    }

    /// Reads the secret from the environment variable `var`.
    pub fn from_env(var: &str) -> Result<Self, SecretError> {
        match std::env::var(var) {
            Ok(value) => Self::checked(&value, format!("environment variable {var}")),
            Err(std::env::VarError::NotPresent) => Err(SecretError::EnvMissing {
                var: var.to_owned(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::EnvNotUnicode {
                var: var.to_owned(),
            }),
        }
    }

    /// Reads the secret from a file, trimming trailing `\n` / `\r\n` (mounted secrets).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SecretError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| SecretError::FileRead {
            path: path.to_owned(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SecretError::FileNotUtf8 {
            path: path.to_owned(),
        })?;
        let trimmed = text.trim_end_matches(['\n', '\r']);
        Self::checked(trimmed, format!("file {}", path.display()))
    }

    /// Reads the secret from where the config says it is: the one loader of API
    /// keys, for lookups and reporters alike.
    pub fn from_source(source: &KeySource) -> Result<Self, SecretError> {
        match source {
            KeySource::Env(var) => Self::from_env(var),
            KeySource::File(path) => Self::from_file(path),
        }
    }

    /// The secret text. Call it only where a request is built.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A URL fit to print: userinfo becomes `***@`, every query value and the fragment
/// become `***` (`https://***@host/path?apiKey=***`). Works on the text as written,
/// so a URL that does not parse is redacted too.
pub fn redact_url(url: &str) -> String {
    let (url, fragment) = match url.split_once('#') {
        Some((url, _)) => (url, Some("***")),
        None => (url, None),
    };
    let (url, query) = match url.split_once('?') {
        Some((url, query)) => (url, Some(query)),
        None => (url, None),
    };
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len() + 8);
    out.push_str(scheme);
    match authority.rfind('@') {
        Some(at) => {
            out.push_str("***@");
            out.push_str(&authority[at + 1..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(path);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                // A bare `?token`: the whole pair may be the secret.
                None if pair.is_empty() => String::new(),
                None => "***".to_string(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Issue 8 item 11: `check` printed a `base_url` with credentials as it was.
    #[test]
    fn redact_url_hides_userinfo_query_values_and_fragment() {
        let cases = [
            ("https://ipinsights.io", "https://ipinsights.io"),
            (
                "http://127.0.0.1:8600/ipinsights/",
                "http://127.0.0.1:8600/ipinsights/",
            ),
            ("https://user:pass@host/api", "https://***@host/api"),
            ("https://token@host", "https://***@host"),
            ("https://u:p@ss@host/x@y", "https://***@host/x@y"),
            (
                "https://api.ipgeolocation.io/ipgeo?apiKey=k3y&fields=asn",
                "https://api.ipgeolocation.io/ipgeo?apiKey=***&fields=***",
            ),
            ("https://host/p?k3y", "https://host/p?***"),
            ("https://host/p#frag", "https://host/p#***"),
            ("user:pass@host:80?x=1", "***@host:80?x=***"),
            ("", ""),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    const KEY: &str = "k3y-abcdefgh-123456";

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new(KEY).unwrap();
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(***)");
        assert_eq!(s.expose(), KEY);
    }

    #[test]
    fn from_file_trims_trailing_newline_only() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(f, "{KEY}\r\n").unwrap();
        let s = Secret::from_file(f.path()).unwrap();
        assert_eq!(s.expose(), KEY);

        let mut g = tempfile::NamedTempFile::new().unwrap();
        write!(g, "{KEY}\n\n").unwrap();
        assert_eq!(Secret::from_file(g.path()).unwrap().expose(), KEY);
    }

    #[test]
    fn from_file_errors_name_the_path_not_the_value() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "{KEY} trailing").unwrap();
        let err = Secret::from_file(f.path()).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(!text.contains(&KEY[..8]), "{text}");

        let missing = Secret::from_file("/nonexistent/ipenrich/key").unwrap_err();
        assert!(matches!(missing, SecretError::FileRead { .. }));
        assert!(missing.to_string().contains("/nonexistent/ipenrich/key"));

        let empty = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            Secret::from_file(empty.path()),
            Err(SecretError::Empty { .. })
        ));
    }

    #[test]
    fn from_env_reads_and_names_the_variable() {
        // A variable name unique to this test; no other test touches it.
        let var = "IPENRICH_SECRET_TEST_FROM_ENV_7F3A";
        let err = Secret::from_env(var).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("environment variable {var} is not set")
        );
        std::env::set_var(var, KEY);
        let s = Secret::from_env(var).unwrap();
        assert_eq!(s.expose(), KEY);
        std::env::set_var(var, "with space");
        let err = Secret::from_env(var).unwrap_err();
        assert!(err.to_string().contains(var));
        assert!(!err.to_string().contains("with space"));
        std::env::remove_var(var);
    }

    #[test]
    fn rejects_empty_and_control_characters() {
        assert!(matches!(Secret::new(""), Err(SecretError::Empty { .. })));
        assert!(matches!(
            Secret::new("ab\u{7}cd"),
            Err(SecretError::BadCharacters { .. })
        ));
    }
}
