//! LWA's errors, sorted by what the caller must do about them.

use std::time::Duration;

/// What a caller must do about an [`LwaError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The grant is dead (`invalid_grant`): the account must be authorized again. Never retried.
    Reauthorize,
    /// The app's configuration is wrong (`invalid_client`, `unauthorized_client`,
    /// `invalid_scope`, or a request LWA calls malformed): fix it; retrying will not help.
    Configuration,
    /// Amazon is throttling or failing (429, 5xx, `server_error`, `temporarily_unavailable`,
    /// timeouts, connection errors): retry later.
    RetryLater,
    /// Amazon answered with something that is not LWA's protocol.
    MalformedResponse,
}

/// Why a transient failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransientKind {
    /// HTTP 429.
    Throttled,
    /// HTTP 5xx or an LWA `server_error` / `temporarily_unavailable`.
    ServerError,
    /// No answer in time.
    Timeout,
    /// The connection could not be made or was dropped.
    Connection,
}

/// An error from the LWA token endpoint or on the way to it.
///
/// Messages carry LWA's error code and description and never a token or a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LwaError {
    /// `invalid_grant`: the code or refresh token is invalid, expired, revoked, or belongs to
    /// another client.
    #[error("LWA refused the grant ({code}: {description}); the account must be authorized again")]
    Reauthorize {
        /// LWA's `error` (normally `invalid_grant`).
        code: String,
        /// LWA's `error_description`.
        description: String,
    },
    /// The app's credentials or request are wrong (`invalid_client`, `unauthorized_client`,
    /// `invalid_scope`, `invalid_request`, `unsupported_grant_type`, or another 4xx).
    #[error("LWA rejected the app's configuration (HTTP {status}, {code}: {description})")]
    Configuration {
        /// HTTP status.
        status: u16,
        /// LWA's `error`.
        code: String,
        /// LWA's `error_description`.
        description: String,
    },
    /// Throttled, failing or unreachable: worth retrying later.
    #[error("LWA is unavailable, try again later ({kind:?}{}): {description}", status.map(|s| format!(", HTTP {s}")).unwrap_or_default())]
    Transient {
        /// What went wrong.
        kind: TransientKind,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// LWA's `error`, when the response carried one.
        code: Option<String>,
        /// What happened, in words.
        description: String,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A response that is not LWA's protocol (not JSON, missing fields, …).
    #[error("LWA sent a malformed response (HTTP {status}): {reason}")]
    MalformedResponse {
        /// HTTP status.
        status: u16,
        /// What was wrong with it (never its content).
        reason: String,
    },
}

impl LwaError {
    /// What the caller must do.
    pub fn class(&self) -> ErrorClass {
        match self {
            LwaError::Reauthorize { .. } => ErrorClass::Reauthorize,
            LwaError::Configuration { .. } => ErrorClass::Configuration,
            LwaError::Transient { .. } => ErrorClass::RetryLater,
            LwaError::MalformedResponse { .. } => ErrorClass::MalformedResponse,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::RetryLater
    }

    /// LWA's `error` code, when the response carried one.
    pub fn code(&self) -> Option<&str> {
        match self {
            LwaError::Reauthorize { code, .. } | LwaError::Configuration { code, .. } => Some(code),
            LwaError::Transient { code, .. } => code.as_deref(),
            LwaError::MalformedResponse { .. } => None,
        }
    }

    /// Sorts an LWA error response by its status and `error` code.
    pub(crate) fn from_response(
        status: u16,
        code: Option<String>,
        description: Option<String>,
        retry_after: Option<Duration>,
    ) -> LwaError {
        let description = description.map(|d| truncate(&d)).unwrap_or_default();
        let normalized = code.as_deref().map(|c| c.to_ascii_lowercase().replace('_', ""));
        match normalized.as_deref() {
            Some("invalidgrant") => LwaError::Reauthorize {
                code: code.unwrap_or_default(),
                description,
            },
            // `server_error` and `ServerError` are both seen spelled; match either.
            Some("servererror") | Some("temporarilyunavailable") => LwaError::Transient {
                kind: if status == 429 {
                    TransientKind::Throttled
                } else {
                    TransientKind::ServerError
                },
                status: Some(status),
                code,
                description,
                retry_after,
            },
            _ if status == 429 => LwaError::Transient {
                kind: TransientKind::Throttled,
                status: Some(status),
                code,
                description,
                retry_after,
            },
            _ if status >= 500 => LwaError::Transient {
                kind: TransientKind::ServerError,
                status: Some(status),
                code,
                description,
                retry_after,
            },
            Some(_) => LwaError::Configuration {
                status,
                code: code.unwrap_or_default(),
                description,
            },
            None if (400..500).contains(&status) => LwaError::Configuration {
                status,
                code: String::from("unknown"),
                description,
            },
            None => LwaError::MalformedResponse {
                status,
                reason: "no error code in a non-success response".into(),
            },
        }
    }
}

/// Keeps Amazon's descriptions to a sensible length in messages and logs.
fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(status: u16, code: Option<&str>) -> ErrorClass {
        LwaError::from_response(status, code.map(String::from), Some("d".into()), None).class()
    }

    #[test]
    fn classes_follow_what_the_caller_must_do() {
        assert_eq!(classify(400, Some("invalid_grant")), ErrorClass::Reauthorize);
        assert_eq!(classify(401, Some("invalid_client")), ErrorClass::Configuration);
        assert_eq!(
            classify(400, Some("unauthorized_client")),
            ErrorClass::Configuration
        );
        assert_eq!(classify(400, Some("invalid_scope")), ErrorClass::Configuration);
        assert_eq!(classify(500, Some("server_error")), ErrorClass::RetryLater);
        assert_eq!(classify(500, Some("ServerError")), ErrorClass::RetryLater);
        assert_eq!(
            classify(503, Some("temporarily_unavailable")),
            ErrorClass::RetryLater
        );
        assert_eq!(classify(429, None), ErrorClass::RetryLater);
        assert_eq!(classify(502, None), ErrorClass::RetryLater);
        assert_eq!(classify(200, None), ErrorClass::MalformedResponse);
    }
}
