//! Transport URLs: which transport a URL names, and password redaction for logs and errors.

use crate::error::MqError;
use std::fmt;

/// Replaces the password of a URL's user info with `***`, so the URL can be
/// logged or put in an error. Leaves URLs without a password unchanged.
///
/// ```
/// assert_eq!(
///     pretext_mq::redact_url("amqp://guest:secret@broker:5672/%2f"),
///     "amqp://guest:***@broker:5672/%2f"
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    // The user info ends at the last '@' of the authority: a password may
    // itself contain an unescaped '@'.
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return url.to_owned();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &userinfo[..colon],
        &url[authority_start + at..]
    )
}

/// Removes a URL and its password from a message that may quote them (the
/// client's parser quotes the whole URL in some errors).
fn scrub(message: &str, url: &str) -> String {
    let mut scrubbed = message.replace(url, &redact_url(url));
    if let Some(password) = password_of(url).filter(|p| !p.is_empty()) {
        scrubbed = scrubbed.replace(password, "***");
    }
    scrubbed
}

/// The password of a URL's user info, if any.
fn password_of(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    Some(&userinfo[userinfo.find(':')? + 1..])
}

/// A broker URL that may hold a password: `Display` and `Debug` show it
/// redacted; only the client library is given the real one.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

impl AmqpUrl {
    /// The URL with its password, for the client library only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The login the client library uses (`guest` when the URL names none).
    pub(crate) fn username(&self) -> String {
        self.0
            .parse::<lapin::uri::AMQPUri>()
            .map(|u| u.authority.userinfo.username)
            .unwrap_or_else(|_| "guest".to_owned())
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AmqpUrl({self})")
    }
}

/// What a transport URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `amqp://…` or `amqps://…`: a RabbitMQ broker.
    Amqp(AmqpUrl),
    /// `memory` or `memory://NAME`: the process-wide in-memory transport of
    /// that name (`default` for plain `memory`).
    Memory(String),
}

impl Endpoint {
    /// Parses a transport URL.
    pub fn parse(url: &str) -> Result<Self, MqError> {
        let trimmed = url.trim();
        if trimmed == "memory" || trimmed == "memory://" {
            return Ok(Self::Memory("default".to_owned()));
        }
        if let Some(name) = trimmed.strip_prefix("memory://") {
            return Ok(Self::Memory(name.to_owned()));
        }
        if trimmed.starts_with("amqp://") || trimmed.starts_with("amqps://") {
            // Let the client's parser reject what it cannot use, now rather
            // than at the first connection attempt.
            return match trimmed.parse::<lapin::uri::AMQPUri>() {
                Ok(_) => Ok(Self::Amqp(AmqpUrl(trimmed.to_owned()))),
                Err(reason) => Err(MqError::InvalidUrl {
                    url: redact_url(trimmed),
                    reason: scrub(&reason, trimmed),
                }),
            };
        }
        Err(MqError::InvalidUrl {
            url: redact_url(trimmed),
            reason: "expected amqp://, amqps:// or memory".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        let cases = [
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            (
                "amqps://u:p@ss@host/vh?heartbeat=10",
                "amqps://u:***@host/vh?heartbeat=10",
            ),
            ("amqp://user@host/", "amqp://user@host/"),
            ("amqp://host:5672", "amqp://host:5672"),
            ("memory", "memory"),
            ("amqp://u:secret@host", "amqp://u:***@host"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn parses_endpoints_and_never_shows_the_password() {
        let Endpoint::Amqp(url) =
            Endpoint::parse("amqp://guest:topsecret@localhost:5672/%2f").expect("valid amqp url")
        else {
            panic!("not amqp");
        };
        assert!(!format!("{url} {url:?}").contains("topsecret"));
        assert_eq!(
            Endpoint::parse("memory").unwrap(),
            Endpoint::Memory("default".into())
        );
        assert_eq!(
            Endpoint::parse("memory://run1").unwrap(),
            Endpoint::Memory("run1".into())
        );
        let err = Endpoint::parse("amqp://u:topsecret@[bad/").unwrap_err();
        assert!(!format!("{err} {err:?}").contains("topsecret"), "{err}");
        let err = Endpoint::parse("http://u:topsecret@x").unwrap_err();
        assert!(!err.to_string().contains("topsecret"), "{err}");
        assert!(matches!(err, MqError::InvalidUrl { .. }));
    }
}
