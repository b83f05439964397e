//! Broker credentials from the environment or a secret file, so that no
//! password is baked into an image, a compose file or a command line.
//!
//! When the broker URL carries no password, [`resolve_url`] fills in the
//! user from [`USER_ENV`] and the password from [`PASSWORD_ENV`] or from the
//! file named by [`PASSWORD_FILE_ENV`] (a Docker / Kubernetes secret), both
//! percent-encoded. A URL that already has `user:password@` is used as it
//! is. Nothing here logs or returns a password in an error; the filled URL
//! is an [`crate::url::AmqpUrl`] inside the transport, redacted on display.

use std::path::PathBuf;

/// Environment variable with the broker user.
pub const USER_ENV: &str = "PRETEXT_AMQP_USER";
/// Environment variable with the broker password.
pub const PASSWORD_ENV: &str = "PRETEXT_AMQP_PASSWORD";
/// Environment variable with the path of a file holding the broker password
/// (its trailing newline is ignored).
pub const PASSWORD_FILE_ENV: &str = "PRETEXT_AMQP_PASSWORD_FILE";

/// Why the credentials could not be loaded. No variant holds a password.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Both the password and the password file are set: which one is meant?
    #[error("both {PASSWORD_ENV} and {PASSWORD_FILE_ENV} are set; set one")]
    Ambiguous,
    /// A password is given but no user, neither in the URL nor in [`USER_ENV`].
    #[error("a broker password is set but no user: set {USER_ENV} or put the user in the URL")]
    NoUser,
    /// The password file could not be read.
    #[error("cannot read the broker password file {path} ({PASSWORD_FILE_ENV}): {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The password file is empty (after its trailing newline).
    #[error("the broker password file {0} ({PASSWORD_FILE_ENV}) is empty")]
    EmptyFile(PathBuf),
}

/// User and password from the environment, before they meet a URL.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The user, if set.
    pub user: Option<String>,
    /// The password, if set.
    password: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Credentials {
    /// Reads [`USER_ENV`], [`PASSWORD_ENV`] and [`PASSWORD_FILE_ENV`] from the
    /// process environment (empty values count as unset).
    pub fn from_env() -> Result<Self, CredentialsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] with the variables looked up by `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let password = match (var(PASSWORD_ENV), var(PASSWORD_FILE_ENV)) {
            (Some(_), Some(_)) => return Err(CredentialsError::Ambiguous),
            (Some(p), None) => Some(p),
            (None, Some(path)) => Some(read_secret(PathBuf::from(path))?),
            (None, None) => None,
        };
        Ok(Self {
            user: var(USER_ENV),
            password,
        })
    }

    /// `url` with these credentials filled in where it has none: a URL
    /// with a password is returned unchanged; a URL with only a user gets
    /// the password; a URL without user info gets both (or the user alone).
    /// `memory` and other non-AMQP URLs are returned unchanged.
    pub fn fill(&self, url: &str) -> Result<String, CredentialsError> {
        let trimmed = url.trim();
        let Some(scheme_end) = trimmed
            .starts_with("amqp")
            .then(|| trimmed.find("://"))
            .flatten()
        else {
            return Ok(url.to_owned());
        };
        let start = scheme_end + 3;
        let rest = &trimmed[start..];
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        let (url_user, url_has_password, host) = match authority.rfind('@') {
            Some(at) => {
                let info = &authority[..at];
                match info.split_once(':') {
                    Some((user, _)) => (Some(user.to_owned()), true, &authority[at + 1..]),
                    None => (Some(info.to_owned()), false, &authority[at + 1..]),
                }
            }
            None => (None, false, authority),
        };
        if url_has_password {
            return Ok(url.to_owned());
        }
        let user = match (url_user, &self.user) {
            (Some(user), _) => user, // already encoded as written
            (None, Some(user)) => encode(user),
            (None, None) if self.password.is_some() => return Err(CredentialsError::NoUser),
            (None, None) => return Ok(url.to_owned()),
        };
        let info = match &self.password {
            Some(password) => format!("{user}:{}", encode(password)),
            None => user,
        };
        Ok(format!(
            "{}{info}@{host}{}",
            &trimmed[..start],
            &rest[authority_len..]
        ))
    }
}

/// `url` with the credentials of the environment filled in (see
/// [`Credentials::fill`]); what [`crate::connect`] uses.
pub fn resolve_url(url: &str) -> Result<String, CredentialsError> {
    Credentials::from_env()?.fill(url)
}

fn read_secret(path: PathBuf) -> Result<String, CredentialsError> {
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(CredentialsError::File { path, source }),
    };
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    if secret.is_empty() {
        return Err(CredentialsError::EmptyFile(path));
    }
    Ok(secret.to_owned())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so any
/// user or password fits in the URL's user info.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn creds(vars: &[(&str, &str)]) -> Result<Credentials, CredentialsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Credentials::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn fills_user_and_password_where_the_url_has_none() {
        let c = creds(&[(USER_ENV, "trainer"), (PASSWORD_ENV, "p@ss:w/rd%")]).unwrap();
        let cases = [
            (
                "amqp://rabbitmq:5672/pretext",
                "amqp://trainer:p%40ss%3Aw%2Frd%25@rabbitmq:5672/pretext",
            ),
            ("amqps://host", "amqps://trainer:p%40ss%3Aw%2Frd%25@host"),
            (
                "amqp://host?heartbeat=10",
                "amqp://trainer:p%40ss%3Aw%2Frd%25@host?heartbeat=10",
            ),
            // A user in the URL keeps it; only the password is added.
            (
                "amqp://producer@host/v",
                "amqp://producer:p%40ss%3Aw%2Frd%25@host/v",
            ),
            // A URL with a password is used as written.
            ("amqp://guest:guest@host/%2f", "amqp://guest:guest@host/%2f"),
            ("memory", "memory"),
            ("memory://run1", "memory://run1"),
        ];
        for (url, want) in cases {
            assert_eq!(c.fill(url).unwrap(), want, "{url}");
        }
        // The filled URL parses and round-trips the password.
        let filled = c.fill("amqp://rabbitmq:5672/pretext").unwrap();
        let uri: lapin::uri::AMQPUri = filled.parse().unwrap();
        assert_eq!(uri.authority.userinfo.username, "trainer");
        assert_eq!(uri.authority.userinfo.password, "p@ss:w/rd%");
    }

    #[test]
    fn nothing_set_leaves_the_url_alone() {
        let c = creds(&[]).unwrap();
        assert_eq!(
            c.fill("amqp://host:5672/%2f").unwrap(),
            "amqp://host:5672/%2f"
        );
        let c = creds(&[(USER_ENV, "u")]).unwrap();
        assert_eq!(c.fill("amqp://host").unwrap(), "amqp://u@host");
    }

    #[test]
    fn reads_the_password_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let p = path.to_str().unwrap();
        let c = creds(&[(USER_ENV, "producer"), (PASSWORD_FILE_ENV, p)]).unwrap();
        assert_eq!(
            c.fill("amqp://h/pretext").unwrap(),
            "amqp://producer:s3cret@h/pretext"
        );
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");

        std::fs::write(&path, "\n").unwrap();
        let err = creds(&[(USER_ENV, "u"), (PASSWORD_FILE_ENV, p)]).unwrap_err();
        assert!(matches!(err, CredentialsError::EmptyFile(_)), "{err}");
        let missing = dir.path().join("missing");
        let err = creds(&[(PASSWORD_FILE_ENV, missing.to_str().unwrap())]).unwrap_err();
        assert!(matches!(err, CredentialsError::File { .. }), "{err}");
    }

    #[test]
    fn refuses_ambiguous_or_userless_passwords_without_showing_them() {
        let err = creds(&[(PASSWORD_ENV, "hunter2"), (PASSWORD_FILE_ENV, "/x")]).unwrap_err();
        assert!(matches!(err, CredentialsError::Ambiguous));
        let c = creds(&[(PASSWORD_ENV, "hunter2")]).unwrap();
        let err = c.fill("amqp://host").unwrap_err();
        assert!(matches!(err, CredentialsError::NoUser));
        for e in [err.to_string(), format!("{err:?}"), format!("{c:?}")] {
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
