//! [`FakeControl`]: an HTTP client of the control API, for tests in any crate.

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::Quirks;
use crate::model::{
    Advertiser, AdvertiserSpec, App, AppSpec, AppstoreSpec, AuthorizationRecord, AuthorizeSpec, ClockState,
    Counters, Fault, FaultSpec, PayloadSpec, RecordedRequest, RevokeSpec, Seller, SellerSpec, TokenInfo,
};

/// A control API call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The HTTP call itself failed.
    #[error("control API call failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The control API refused the call.
    #[error("control API answered {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The `error` message.
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("control API answer did not parse: {0}")]
    Decode(#[from] serde_json::Error),
}

/// HTTP client of a fake's control API (`/__fake/…`).
///
/// The typed methods panic with the control API's message when a call fails: they are test
/// helpers, and a failing control call is a bug in the test. Use [`FakeControl::call`] to
/// observe failures instead.
#[derive(Debug, Clone)]
pub struct FakeControl {
    base_url: String,
    http: reqwest::Client,
}

impl FakeControl {
    /// A client of the fake at `base_url` (`http://127.0.0.1:PORT`).
    pub fn new(base_url: &str) -> FakeControl {
        FakeControl {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }

    /// A client of the fake at `base_url` using this `reqwest::Client`.
    pub fn with_client(base_url: &str, http: reqwest::Client) -> FakeControl {
        FakeControl {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// One raw call: `method /__fake/{path}` with an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ControlError> {
        let url = format!("{}/__fake/{}", self.base_url, path.trim_start_matches('/'));
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        if !(200..300).contains(&status) {
            return Err(ControlError::Refused {
                status,
                message: value
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or(&text)
                    .to_owned(),
            });
        }
        Ok(value)
    }

    async fn typed<T: DeserializeOwned>(&self, method: Method, path: &str, body: Option<Value>) -> T {
        let value = match self.call(method.clone(), path, body.as_ref()).await {
            Ok(v) => v,
            Err(e) => panic!("fake-amazon control {method} /__fake/{path}: {e}"),
        };
        match serde_json::from_value(value) {
            Ok(v) => v,
            Err(e) => panic!("fake-amazon control {method} /__fake/{path}: unexpected answer: {e}"),
        }
    }

    fn to_json<T: Serialize>(value: &T) -> Value {
        serde_json::to_value(value).unwrap_or(Value::Null)
    }

    /// Fake now, ms since the epoch.
    pub async fn clock(&self) -> i64 {
        self.clock_state().await.now_ms
    }

    /// Fake now and the offset from the system clock.
    pub async fn clock_state(&self) -> ClockState {
        self.typed(Method::GET, "clock", None).await
    }

    /// Moves the fake clock by `secs`; returns the new now in ms.
    pub async fn advance_clock(&self, secs: f64) -> i64 {
        let state: ClockState = self
            .typed(Method::POST, "clock/advance", Some(json!({ "seconds": secs })))
            .await;
        state.now_ms
    }

    /// LWA and API call counters.
    pub async fn counters(&self) -> Counters {
        self.typed(Method::GET, "counters", None).await
    }

    /// Zeroes every counter.
    pub async fn reset_counters(&self) {
        let _: Value = self.typed(Method::POST, "counters/reset", None).await;
    }

    /// The last (at most 1000) requests to Amazon hosts, oldest first, optionally of one host.
    pub async fn requests(&self, host: Option<&str>) -> Vec<RecordedRequest> {
        let path = match host {
            Some(h) => format!(
                "requests?{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("host", h)
                    .finish()
            ),
            None => "requests".to_owned(),
        };
        self.typed(Method::GET, &path, None).await
    }

    /// Forgets the recorded requests.
    pub async fn clear_requests(&self) {
        let _: Value = self.typed(Method::DELETE, "requests", None).await;
    }

    /// Registers (or replaces) an app.
    pub async fn register_app(&self, spec: AppSpec) -> App {
        self.typed(Method::POST, "apps", Some(Self::to_json(&spec))).await
    }

    /// Every app.
    pub async fn apps(&self) -> Vec<App> {
        self.typed(Method::GET, "apps", None).await
    }

    /// Registers (or replaces) a seller or vendor.
    pub async fn register_seller(&self, spec: SellerSpec) -> Seller {
        self.typed(Method::POST, "sellers", Some(Self::to_json(&spec)))
            .await
    }

    /// Every seller and vendor.
    pub async fn sellers(&self) -> Vec<Seller> {
        self.typed(Method::GET, "sellers", None).await
    }

    /// Registers (or replaces) an advertiser.
    pub async fn register_advertiser(&self, spec: AdvertiserSpec) -> Advertiser {
        self.typed(Method::POST, "advertisers", Some(Self::to_json(&spec)))
            .await
    }

    /// Every advertiser.
    pub async fn advertisers(&self) -> Vec<Advertiser> {
        self.typed(Method::GET, "advertisers", None).await
    }

    /// Issues an authorization code without the consent UI, bound like a consent-issued one.
    pub async fn authorize(&self, spec: AuthorizeSpec) -> String {
        let v: Value = self
            .typed(Method::POST, "authorize", Some(Self::to_json(&spec)))
            .await;
        v["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Plays the seller clicking Authorize in the Appstore (or re-authorizing): returns the app's
    /// Login URI with `amazon_callback_uri`, `amazon_state`, `selling_partner_id` and, for a
    /// draft app, `version=beta`. The app then sends the browser to
    /// `{amazon_callback_uri}?redirect_uri=…&amazon_state=…&state=…`.
    pub async fn appstore_authorize(&self, spec: AppstoreSpec) -> String {
        let v: Value = self
            .typed(Method::POST, "appstore-authorize", Some(Self::to_json(&spec)))
            .await;
        v["url"].as_str().unwrap_or_default().to_owned()
    }

    /// Every code issued (consent pages and control API), oldest first.
    pub async fn authorizations(&self) -> Vec<AuthorizationRecord> {
        self.typed(Method::GET, "authorizations", None).await
    }

    /// Seller Central self-authorization: a refresh token for (app, seller), no code.
    pub async fn self_authorize(&self, client_id: &str, selling_partner_id: &str) -> String {
        let v: Value = self
            .typed(
                Method::POST,
                "self-authorize",
                Some(json!({"client_id": client_id, "selling_partner_id": selling_partner_id})),
            )
            .await;
        v["refresh_token"].as_str().unwrap_or_default().to_owned()
    }

    /// Revokes tokens; returns how many were revoked.
    pub async fn revoke(&self, spec: RevokeSpec) -> usize {
        let v: Value = self
            .typed(Method::POST, "revoke", Some(Self::to_json(&spec)))
            .await;
        v["revoked"]
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Adds a fault; returns its id.
    pub async fn add_fault(&self, spec: FaultSpec) -> u64 {
        let v: Value = self
            .typed(Method::POST, "faults", Some(Self::to_json(&spec)))
            .await;
        v["id"].as_u64().unwrap_or(0)
    }

    /// Every fault, with what is left of its script.
    pub async fn faults(&self) -> Vec<Fault> {
        self.typed(Method::GET, "faults", None).await
    }

    /// Removes one fault.
    pub async fn remove_fault(&self, id: u64) {
        let _: Value = self.typed(Method::DELETE, &format!("faults/{id}"), None).await;
    }

    /// Removes every fault.
    pub async fn clear_faults(&self) {
        let _: Value = self.typed(Method::DELETE, "faults", None).await;
    }

    /// The current quirks.
    pub async fn quirks(&self) -> Quirks {
        self.typed(Method::GET, "quirks", None).await
    }

    /// Replaces every quirk.
    pub async fn set_quirks(&self, quirks: Quirks) {
        let _: Value = self
            .typed(Method::POST, "quirks", Some(Self::to_json(&quirks)))
            .await;
    }

    /// Changes the access-token TTL (seconds) for tokens issued from now on.
    pub async fn set_access_token_ttl(&self, seconds: u64) {
        let _: Value = self
            .typed(
                Method::POST,
                "quirks",
                Some(json!({ "access_token_ttl": seconds })),
            )
            .await;
    }

    /// Turns auto-approval of consent pages on or off.
    pub async fn set_auto_approve(&self, on: bool) {
        let _: Value = self
            .typed(Method::POST, "quirks", Some(json!({ "auto_approve": on })))
            .await;
    }

    /// Notifications Amazon would have sent (e.g. `APPLICATION_OAUTH_CLIENT_NEW_SECRET`).
    pub async fn notifications(&self) -> Vec<Value> {
        self.typed(Method::GET, "notifications", None).await
    }

    /// Emits an `APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY` notification and makes the app's
    /// current secret expire in `expires_in_seconds`.
    pub async fn notify_secret_expiry(&self, client_id: &str, expires_in_seconds: i64) -> Value {
        self.typed(
            Method::POST,
            "notifications/secret-expiry",
            Some(json!({"client_id": client_id, "expires_in_seconds": expires_in_seconds})),
        )
        .await
    }

    /// Sets an operation's token bucket (e.g. `getMarketplaceParticipations`, `getProfiles`,
    /// `lwaToken`).
    pub async fn set_rate(&self, operation: &str, rate: f64, burst: u32) {
        let _: Value = self
            .typed(
                Method::POST,
                "rates",
                Some(json!({"operation": operation, "rate": rate, "burst": burst})),
            )
            .await;
    }

    /// Serves `bytes` bytes at `GET {host}{path}` (an SP-API or Ads host), generated on the fly
    /// and streamed in 64 KiB chunks, `Content-Type: application/octet-stream`. Byte `i` is
    /// [`crate::payload::byte_at`]`(i)`. The host's usual auth applies (operation
    /// `downloadPayload`). The same host and path again replaces the payload.
    pub async fn add_payload(&self, host: &str, path: &str, bytes: u64) {
        self.add_payload_spec(PayloadSpec {
            host: host.to_owned(),
            path: path.to_owned(),
            bytes,
            content_type: None,
        })
        .await;
    }

    /// [`FakeControl::add_payload`] with every field, e.g. a `content_type`.
    pub async fn add_payload_spec(&self, spec: PayloadSpec) {
        let _: Value = self
            .typed(Method::POST, "payloads", Some(Self::to_json(&spec)))
            .await;
    }

    /// Every registered payload.
    pub async fn payloads(&self) -> Vec<PayloadSpec> {
        self.typed(Method::GET, "payloads", None).await
    }

    /// Removes every payload.
    pub async fn clear_payloads(&self) {
        let _: Value = self.typed(Method::DELETE, "payloads", None).await;
    }

    /// What the fake knows about a token, if anything.
    pub async fn token_info(&self, token: &str) -> Option<TokenInfo> {
        match self
            .call(Method::POST, "token-info", Some(&json!({ "token": token })))
            .await
        {
            Ok(v) => serde_json::from_value(v).ok(),
            Err(ControlError::Refused { status: 404, .. }) => None,
            Err(e) => panic!("fake-amazon control POST /__fake/token-info: {e}"),
        }
    }
}
