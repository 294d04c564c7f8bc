//! The operator's browser session: log in with the admin token, get a sealed cookie; a CSRF
//! token per session checked on every form; failed logins limited per client address.
//!
//! The cookie is the session: sealed under the master key (`Sealer`, owner `admin-session`),
//! so every replica sharing the database accepts it; the database holds only the sessions ended
//! by a logout (`ended_sessions`, until their cookie would have expired), so a logout on one
//! replica ends the session on all of them. The cookie names the admin token it was made from
//! (the first bytes of its hash), so a new `lwa-broker admin-token` ends every session.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use parking_lot::Mutex;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::operator::ADMIN_TOKEN_META;
use crate::state::AppState;

/// The session cookie.
pub const SESSION_COOKIE: &str = "lwa_admin";
/// The cookie that carries the login form's CSRF token before there is a session.
pub const LOGIN_COOKIE: &str = "lwa_admin_login";
/// How long a session lasts.
pub const SESSION_MS: i64 = 12 * 3_600_000;
const LOGIN_FORM_MS: i64 = 30 * 60_000;
/// Failed logins allowed per client address in [`LOGIN_WINDOW_MS`]; the next attempt is a 429.
pub const LOGIN_FAILURES: usize = 5;
/// The window of [`LOGIN_FAILURES`].
pub const LOGIN_WINDOW_MS: i64 = 15 * 60_000;

const OWNER: &str = "admin-session";

/// What the sealed session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SessionClaims {
    /// Random id (logout ends it).
    sid: String,
    /// The session's CSRF token.
    csrf: String,
    /// Expiry (broker clock, ms).
    exp: i64,
    /// The first 16 hex characters of the admin token's SHA-256 it was made from.
    tok: String,
}

/// What the sealed login cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoginClaims {
    csrf: String,
    exp: i64,
}

/// A logged-in operator: the extractor of every dashboard page and form. Without a valid
/// session a page answers with a redirect to the login page ([`NotLoggedIn`]).
#[derive(Debug, Clone)]
pub struct AdminSession {
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    sid: String,
    exp: i64,
}

impl AdminSession {
    /// Whether `presented` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

/// The rejection of [`AdminSession`]: a page sends the browser to the login form; a form
/// (any other method) is refused with a 403.
#[derive(Debug)]
pub struct NotLoggedIn {
    page: bool,
}

impl axum::response::IntoResponse for NotLoggedIn {
    fn into_response(self) -> axum::response::Response {
        if self.page {
            super::see_other("/admin/login")
        } else {
            super::pages::refused("You are not logged in (or your session ended): log in again.")
        }
    }
}

/// Failed logins per address (in this process; see the README on several replicas). Ended
/// sessions are in the database ([`lwa_store::Store::end_session`]), so every process refuses
/// them.
#[derive(Debug, Default)]
pub struct Sessions {
    failures: Mutex<HashMap<IpAddr, VecDeque<i64>>>,
}

impl Sessions {
    /// Err(seconds to wait) when `client` has failed [`LOGIN_FAILURES`] times in the window.
    pub fn login_allowed(&self, client: IpAddr, now_ms: i64) -> Result<(), u64> {
        let mut failures = self.failures.lock();
        let Some(queue) = failures.get_mut(&client) else {
            return Ok(());
        };
        while queue.front().is_some_and(|t| now_ms - t >= LOGIN_WINDOW_MS) {
            queue.pop_front();
        }
        match queue.front() {
            Some(oldest) if queue.len() >= LOGIN_FAILURES => {
                Err((((LOGIN_WINDOW_MS - (now_ms - oldest)) + 999) / 1000).max(1) as u64)
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn login_failed(&self, client: IpAddr, now_ms: i64) {
        let mut failures = self.failures.lock();
        if failures.len() > 10_000 {
            failures.retain(|_, q| q.back().is_some_and(|t| now_ms - t < LOGIN_WINDOW_MS));
        }
        failures.entry(client).or_default().push_back(now_ms);
    }

    /// A success forgets the address's failures.
    pub fn login_succeeded(&self, client: IpAddr) {
        self.failures.lock().remove(&client);
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// The stored admin token hash (hex), if one is set.
async fn admin_token_hash(state: &AppState) -> Option<String> {
    state.store.meta(ADMIN_TOKEN_META).await.ok().flatten()
}

/// Whether `presented` is the admin token (constant time on the hashes).
pub async fn check_admin_token(state: &AppState, presented: &str) -> Result<bool, crate::error::ApiError> {
    let presented: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    let stored = state
        .store
        .meta(ADMIN_TOKEN_META)
        .await?
        .and_then(|h| hex::decode(h).ok())
        .and_then(|d| <[u8; 32]>::try_from(d).ok());
    Ok(stored.is_some_and(|s| bool::from(presented.ct_eq(&s))))
}

/// The attributes of every cookie we set: HttpOnly, SameSite=Strict, path `/admin`, and
/// Secure unless the public URL is a loopback name (a browser drops Secure cookies over http).
fn cookie_attributes(state: &AppState) -> &'static str {
    let local = matches!(
        state.public_url.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]")
    );
    if local {
        "Path=/admin; HttpOnly; SameSite=Strict"
    } else {
        "Path=/admin; HttpOnly; SameSite=Strict; Secure"
    }
}

fn cookie(state: &AppState, name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age_s}; {}",
        cookie_attributes(state)
    ))
    .expect("sealed values and attributes are header-safe")
}

/// A `Set-Cookie` that removes `name`.
pub fn clear_cookie(state: &AppState, name: &str) -> HeaderValue {
    cookie(state, name, "", 0)
}

fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn seal<T: Serialize>(state: &AppState, field: &str, claims: &T) -> String {
    let json = serde_json::to_string(claims).expect("claims serialize");
    state.sealer.seal(OWNER, field, &json, None)
}

fn open<T: for<'de> Deserialize<'de>>(state: &AppState, field: &str, sealed: &str) -> Option<T> {
    let json = state.sealer.open(OWNER, field, sealed, None).ok()?;
    serde_json::from_str(&json).ok()
}

/// A new login form's CSRF token and the cookie that carries it.
pub fn new_login_form(state: &AppState) -> (String, HeaderValue) {
    let claims = LoginClaims {
        csrf: random_hex(32),
        exp: state.now_ms() + LOGIN_FORM_MS,
    };
    let value = seal(state, "login", &claims);
    (
        claims.csrf,
        cookie(state, LOGIN_COOKIE, &value, LOGIN_FORM_MS / 1000),
    )
}

/// Whether the login form's CSRF token matches its cookie.
pub fn login_csrf_ok(state: &AppState, headers: &HeaderMap, presented: Option<&str>) -> bool {
    let Some(claims) =
        read_cookie(headers, LOGIN_COOKIE).and_then(|v| open::<LoginClaims>(state, "login", v))
    else {
        return false;
    };
    claims.exp > state.now_ms()
        && presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(claims.csrf.as_bytes())))
}

/// A new session's cookie (after the admin token was checked).
pub async fn new_session(state: &AppState) -> Option<HeaderValue> {
    let hash = admin_token_hash(state).await?;
    let claims = SessionClaims {
        sid: random_hex(16),
        csrf: random_hex(32),
        exp: state.now_ms() + SESSION_MS,
        tok: hash.chars().take(16).collect(),
    };
    Some(cookie(
        state,
        SESSION_COOKIE,
        &seal(state, "session", &claims),
        SESSION_MS / 1000,
    ))
}

/// Ends the session in every process sharing the database (the browser drops the cookie too).
pub async fn end_session(state: &AppState, session: &AdminSession) -> Result<(), lwa_store::StoreError> {
    state.store.end_session(&session.sid, session.exp).await
}

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = NotLoggedIn;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let not_logged_in = NotLoggedIn {
            page: parts.method == axum::http::Method::GET,
        };
        let claims = read_cookie(&parts.headers, SESSION_COOKIE)
            .and_then(|v| open::<SessionClaims>(state, "session", v))
            .ok_or(not_logged_in)?;
        let not_logged_in = NotLoggedIn {
            page: parts.method == axum::http::Method::GET,
        };
        if claims.exp <= state.now_ms() {
            return Err(not_logged_in);
        }
        match state.store.session_ended(&claims.sid).await {
            Ok(false) => {}
            Ok(true) => return Err(not_logged_in),
            // The database is down: no page can be shown without it; back to the login page.
            Err(e) => {
                tracing::warn!(error = %e, "could not check the dashboard session");
                return Err(not_logged_in);
            }
        }
        let Some(current) = admin_token_hash(state).await else {
            return Err(not_logged_in);
        };
        if !current.starts_with(&claims.tok) || claims.tok.len() != 16 {
            return Err(not_logged_in);
        }
        Ok(AdminSession {
            csrf: claims.csrf,
            sid: claims.sid,
            exp: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_are_limited_per_address() {
        let sessions = Sessions::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for i in 0..LOGIN_FAILURES as i64 {
            assert!(sessions.login_allowed(a, i).is_ok());
            sessions.login_failed(a, i);
        }
        assert!(sessions.login_allowed(a, 10).is_err());
        assert!(sessions.login_allowed(b, 10).is_ok());
        assert!(sessions.login_allowed(a, LOGIN_WINDOW_MS + 5).is_ok());
    }
}
