//! The LWA token endpoint client: the three grants, retries, and client-secret fallback.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng as _;
use serde::Deserialize;

use crate::endpoints::Endpoints;
use crate::error::{LwaError, TransientKind};
use crate::secret::{AccessToken, AuthorizationCode, ClientSecret, CodeVerifier, RefreshToken};

/// The path of LWA's token endpoint on every token host.
pub const TOKEN_PATH: &str = "/auth/o2/token";

/// An app's LWA credentials. Amazon rotates client secrets every 180 days with a 7-day overlap,
/// so an app may hold the newer `secret` and the `previous` one.
#[derive(Clone)]
pub struct AppCredentials {
    /// The LWA client id (`amzn1.application-oa2-client.…`).
    pub client_id: String,
    /// The newest client secret.
    pub secret: ClientSecret,
    /// The secret it replaced, tried once when the newest gets `invalid_client`.
    pub previous_secret: Option<ClientSecret>,
}

impl AppCredentials {
    /// Credentials with one secret.
    pub fn new(client_id: impl Into<String>, secret: impl Into<ClientSecret>) -> Self {
        Self {
            client_id: client_id.into(),
            secret: secret.into(),
            previous_secret: None,
        }
    }

    /// Adds the previous secret, used as a fallback during a rotation.
    pub fn with_previous_secret(mut self, previous: impl Into<ClientSecret>) -> Self {
        self.previous_secret = Some(previous.into());
        self
    }
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("secret", &"[redacted]")
            .field(
                "previous_secret",
                &self.previous_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

/// Which of an app's two secrets LWA accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretUsed {
    /// The newest secret.
    Current,
    /// The previous secret: the newest one was refused with `invalid_client`.
    Previous,
}

/// One of LWA's three grants.
#[derive(Clone, Debug)]
pub enum Grant {
    /// Exchange an authorization code from a consent redirect.
    AuthorizationCode {
        /// `spapi_oauth_code` (SP-API) or `code` (Ads).
        code: AuthorizationCode,
        /// The redirect URI used in the consent step, if it carried one.
        redirect_uri: Option<String>,
        /// The PKCE verifier, if the consent carried a challenge.
        code_verifier: Option<CodeVerifier>,
    },
    /// Trade a refresh token for a new access token.
    RefreshToken(RefreshToken),
    /// A grantless token for SP-API scopes such as `sellingpartnerapi::notifications`.
    ClientCredentials {
        /// The scopes, sent space-joined.
        scopes: Vec<String>,
    },
}

impl Grant {
    /// LWA's name for the grant.
    pub fn grant_type(&self) -> &'static str {
        match self {
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::RefreshToken(_) => "refresh_token",
            Grant::ClientCredentials { .. } => "client_credentials",
        }
    }

    /// The form body for this grant with the given client credentials, parameters in the
    /// order Amazon's examples use, form-encoded (`+`, `&`, `%` and spaces survive).
    pub fn form_body(&self, client_id: &str, client_secret: &ClientSecret) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", self.grant_type());
        match self {
            Grant::AuthorizationCode {
                code,
                redirect_uri,
                code_verifier,
            } => {
                form.append_pair("code", code.expose());
                if let Some(redirect_uri) = redirect_uri {
                    form.append_pair("redirect_uri", redirect_uri);
                }
                if let Some(verifier) = code_verifier {
                    form.append_pair("code_verifier", verifier.expose());
                }
            }
            Grant::RefreshToken(token) => {
                form.append_pair("refresh_token", token.expose());
            }
            Grant::ClientCredentials { scopes } => {
                form.append_pair("scope", &scopes.join(" "));
            }
        }
        form.append_pair("client_id", client_id);
        form.append_pair("client_secret", client_secret.expose());
        form.finish()
    }
}

/// A successful answer from the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenResponse {
    /// The new access token (`Atza|…`).
    pub access_token: AccessToken,
    /// `bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The refresh token in the response, if any.
    pub refresh_token: Option<RefreshToken>,
    /// True when a refresh grant returned a refresh token different from the one sent: the
    /// caller must store it (AMAZON.md §1.4, "handle both readings").
    pub refresh_token_changed: bool,
    /// The scope, when LWA sent one.
    pub scope: Option<String>,
    /// Which client secret LWA accepted.
    pub secret_used: SecretUsed,
}

/// How the client retries throttling, server errors, timeouts and connection errors. Nothing
/// else is ever retried; `invalid_grant` in particular never is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = none).
    pub max_retries: u32,
    /// The backoff before the first retry; it doubles each time.
    pub initial_backoff: Duration,
    /// The most any one backoff may be.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// No retries: for callers that schedule their own, such as a background refresher.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
    };

    /// The backoff before retry number `retry` (1-based): exponential, capped, with jitter
    /// between half and all of it; a longer `Retry-After` from the server wins, up to the cap.
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = retry.saturating_sub(1).min(20);
        let full = self
            .initial_backoff
            .saturating_mul(1 << exponent)
            .min(self.max_backoff);
        let jittered = full.mul_f64(rand::rng().random_range(0.5..=1.0));
        match retry_after {
            Some(after) => jittered.max(after.min(self.max_backoff)),
            None => jittered,
        }
    }
}

impl Default for RetryPolicy {
    /// Three retries, 250 ms doubling, capped at 5 s.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// A client of LWA's token endpoint.
///
/// Cheap to clone; clones share one connection pool.
///
/// ```no_run
/// # async fn example() -> Result<(), lwa::LwaError> {
/// use lwa::{AppCredentials, Endpoints, LwaClient, RefreshToken};
/// let client = LwaClient::new(Endpoints::amazon());
/// let app = AppCredentials::new("amzn1.application-oa2-client.abc", "amzn1.oa2-cs.v1.secret");
/// let tokens = client
///     .refresh("api.amazon.com", &app, &RefreshToken::new("Atzr|..."))
///     .await?;
/// println!("expires in {} s", tokens.expires_in);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct LwaClient {
    http: reqwest::Client,
    endpoints: Endpoints,
    retry: RetryPolicy,
    observer: Option<Arc<dyn CallObserver>>,
}

/// Told of every HTTP call the client makes to LWA's token endpoint (each retry and each
/// client-secret fallback is a call of its own), for counters and charts. Never given a token.
pub trait CallObserver: Send + Sync + std::fmt::Debug {
    /// One call: its `grant_type` and how it ended: `Ok`, or the error, whose
    /// [`LwaError::code`] is LWA's error code (`invalid_grant`, …; none for a transport error,
    /// a 5xx without LWA's body, a malformed answer) and [`LwaError::class`] what to do about it.
    fn lwa_call(&self, grant_type: &'static str, result: Result<(), &LwaError>);
}

impl LwaClient {
    /// A client with its own connection pool: 30 s overall timeout, 5 s to connect, default
    /// retries.
    pub fn new(endpoints: Endpoints) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self::with_http(http, endpoints)
    }

    /// A client on a `reqwest::Client` of your own (its timeouts apply).
    pub fn with_http(http: reqwest::Client, endpoints: Endpoints) -> Self {
        Self {
            http,
            endpoints,
            retry: RetryPolicy::default(),
            observer: None,
        }
    }

    /// Tells `observer` of every call to the token endpoint (clones share it).
    pub fn with_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The retry policy in use.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Where this client sends requests.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The underlying HTTP client, for API calls that share its pool.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Exchanges an authorization code for an access and refresh token.
    pub async fn exchange_code(
        &self,
        token_host: &str,
        app: &AppCredentials,
        code: &AuthorizationCode,
        redirect_uri: Option<&str>,
        code_verifier: Option<&CodeVerifier>,
    ) -> Result<TokenResponse, LwaError> {
        let grant = Grant::AuthorizationCode {
            code: code.clone(),
            redirect_uri: redirect_uri.map(str::to_owned),
            code_verifier: code_verifier.cloned(),
        };
        self.request_token(token_host, app, &grant).await
    }

    /// Trades a refresh token for a new access token.
    pub async fn refresh(
        &self,
        token_host: &str,
        app: &AppCredentials,
        refresh_token: &RefreshToken,
    ) -> Result<TokenResponse, LwaError> {
        self.request_token(token_host, app, &Grant::RefreshToken(refresh_token.clone()))
            .await
    }

    /// A grantless token (SP-API `client_credentials`) for the given scopes. SP-API apps use
    /// `api.amazon.com` in every region.
    pub async fn client_credentials(
        &self,
        app: &AppCredentials,
        scopes: &[&str],
    ) -> Result<TokenResponse, LwaError> {
        let grant = Grant::ClientCredentials {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        self.request_token("api.amazon.com", app, &grant).await
    }

    /// Any grant: retries the retryable failures under the retry policy, and falls back once
    /// to the previous client secret when the newest gets `invalid_client`.
    #[tracing::instrument(level = "debug", skip(self, app, grant), fields(grant = grant.grant_type(), client_id = %app.client_id))]
    pub async fn request_token(
        &self,
        token_host: &str,
        app: &AppCredentials,
        grant: &Grant,
    ) -> Result<TokenResponse, LwaError> {
        let mut retry = 0;
        loop {
            match self.with_secret_fallback(token_host, app, grant).await {
                Err(error) if error.is_retryable() && retry < self.retry.max_retries => {
                    retry += 1;
                    let retry_after = match &error {
                        LwaError::Transient { retry_after, .. } => *retry_after,
                        _ => None,
                    };
                    let wait = self.retry.backoff(retry, retry_after);
                    tracing::debug!(%error, retry, wait_ms = wait.as_millis() as u64, "LWA call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                result => return result,
            }
        }
    }

    async fn with_secret_fallback(
        &self,
        token_host: &str,
        app: &AppCredentials,
        grant: &Grant,
    ) -> Result<TokenResponse, LwaError> {
        let first = self
            .attempt(token_host, app, &app.secret, grant, SecretUsed::Current)
            .await;
        match (&first, &app.previous_secret) {
            (Err(LwaError::Configuration { code, .. }), Some(previous)) if code == "invalid_client" => {
                tracing::debug!("newest client secret refused; trying the previous one");
                self.attempt(token_host, app, previous, grant, SecretUsed::Previous)
                    .await
            }
            _ => first,
        }
    }

    async fn attempt(
        &self,
        token_host: &str,
        app: &AppCredentials,
        secret: &ClientSecret,
        grant: &Grant,
        secret_used: SecretUsed,
    ) -> Result<TokenResponse, LwaError> {
        let result = self
            .attempt_unobserved(token_host, app, secret, grant, secret_used)
            .await;
        if let Some(observer) = &self.observer {
            observer.lwa_call(grant.grant_type(), result.as_ref().map(|_| ()));
        }
        result
    }

    async fn attempt_unobserved(
        &self,
        token_host: &str,
        app: &AppCredentials,
        secret: &ClientSecret,
        grant: &Grant,
        secret_used: SecretUsed,
    ) -> Result<TokenResponse, LwaError> {
        let url = self.endpoints.url(token_host, TOKEN_PATH);
        let response = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(grant.form_body(&app.client_id, secret))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(transport_error)?;
        if (200..300).contains(&status) {
            parse_success(status, &body, grant, secret_used)
        } else {
            let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
            let (code, description) = parsed
                .map(|b| (b.error, b.error_description))
                .unwrap_or((None, None));
            let description = description.or_else(|| {
                (code.is_none() && status >= 500).then(|| format!("HTTP {status} without an LWA error body"))
            });
            Err(LwaError::from_response(status, code, description, retry_after))
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    scope: Option<String>,
}

fn parse_success(
    status: u16,
    body: &[u8],
    grant: &Grant,
    secret_used: SecretUsed,
) -> Result<TokenResponse, LwaError> {
    let malformed = |reason: &str| LwaError::MalformedResponse {
        status,
        reason: reason.to_owned(),
    };
    let parsed: SuccessBody = serde_json::from_slice(body)
        .map_err(|_| malformed("the body is not an LWA token response in JSON"))?;
    let access_token = parsed
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no access_token"))?;
    // Amazon sends a number; some of its products have sent a numeric string.
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or_else(|| malformed("expires_in is missing or not a whole number of seconds"))?;
    let refresh_token = parsed.refresh_token.filter(|t| !t.is_empty());
    let refresh_token_changed = match (grant, &refresh_token) {
        (Grant::RefreshToken(sent), Some(returned)) => !sent.same_as(returned),
        _ => false,
    };
    Ok(TokenResponse {
        access_token: AccessToken::new(access_token),
        token_type: parsed.token_type.unwrap_or_else(|| "bearer".into()),
        expires_in,
        refresh_token: refresh_token.map(RefreshToken::new),
        refresh_token_changed,
        scope: parsed.scope,
        secret_used,
    })
}

fn transport_error(error: reqwest::Error) -> LwaError {
    let kind = if error.is_timeout() {
        TransientKind::Timeout
    } else {
        TransientKind::Connection
    };
    // reqwest's message names the URL, never the body we sent.
    LwaError::Transient {
        kind,
        status: None,
        code: None,
        description: error.without_url().to_string(),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_encode_every_special_character() {
        let secret = ClientSecret::new("s+c&r%t =x");
        let refresh = Grant::RefreshToken(RefreshToken::new("Atzr|a+b/c="));
        assert_eq!(
            refresh.form_body("amzn1.application-oa2-client.x", &secret),
            "grant_type=refresh_token&refresh_token=Atzr%7Ca%2Bb%2Fc%3D&client_id=amzn1.application-oa2-client.x&client_secret=s%2Bc%26r%25t+%3Dx"
        );
        let code = Grant::AuthorizationCode {
            code: AuthorizationCode::new("ANxyz"),
            redirect_uri: Some("https://x.example/cb?a=1".into()),
            code_verifier: Some(CodeVerifier::new("v-1")),
        };
        assert_eq!(
            code.form_body("id", &ClientSecret::new("s")),
            "grant_type=authorization_code&code=ANxyz&redirect_uri=https%3A%2F%2Fx.example%2Fcb%3Fa%3D1&code_verifier=v-1&client_id=id&client_secret=s"
        );
        let grantless = Grant::ClientCredentials {
            scopes: vec![
                "sellingpartnerapi::notifications".into(),
                "sellingpartnerapi::client_credential:rotation".into(),
            ],
        };
        assert_eq!(
            grantless.form_body("id", &ClientSecret::new("s")),
            "grant_type=client_credentials&scope=sellingpartnerapi%3A%3Anotifications+sellingpartnerapi%3A%3Aclient_credential%3Arotation&client_id=id&client_secret=s"
        );
    }

    #[test]
    fn expires_in_as_number_or_string() {
        let grant = Grant::RefreshToken(RefreshToken::new("Atzr|same"));
        let number = parse_success(200, br#"{"access_token":"Atza|a","token_type":"bearer","expires_in":3600,"refresh_token":"Atzr|same"}"#, &grant, SecretUsed::Current).unwrap();
        assert_eq!(number.expires_in, 3600);
        assert!(!number.refresh_token_changed);
        let string = parse_success(
            200,
            br#"{"access_token":"Atza|a","expires_in":"3600","refresh_token":"Atzr|new"}"#,
            &grant,
            SecretUsed::Current,
        )
        .unwrap();
        assert_eq!(string.expires_in, 3600);
        assert!(string.refresh_token_changed);
        assert!(
            parse_success(
                200,
                br#"{"access_token":"Atza|a","expires_in":"soon"}"#,
                &grant,
                SecretUsed::Current
            )
            .is_err()
        );
        assert!(parse_success(200, b"<html>", &grant, SecretUsed::Current).is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let policy = RetryPolicy {
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
        };
        for _ in 0..50 {
            let first = policy.backoff(1, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(policy.backoff(10, None) <= Duration::from_millis(1000));
            assert!(policy.backoff(1, Some(Duration::from_secs(60))) == Duration::from_millis(1000));
        }
    }
}
