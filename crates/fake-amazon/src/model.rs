//! The public data types: what the control API takes and returns.
//!
//! Field names are snake_case like the rest of the control API, except where an object is in
//! Amazon's own shape (Ads profiles), which keeps Amazon's camelCase.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An Amazon region: North America, Europe or Far East.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// North America (CA, US, MX, BR).
    #[default]
    Na,
    /// Europe, the Middle East, Africa and India.
    Eu,
    /// Far East (SG, AU, JP).
    Fe,
}

impl Region {
    /// Every region, in the order NA, EU, FE.
    pub const ALL: [Region; 3] = [Region::Na, Region::Eu, Region::Fe];

    /// `"na"`, `"eu"` or `"fe"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Na => "na",
            Region::Eu => "eu",
            Region::Fe => "fe",
        }
    }

    /// Parses `na`, `eu` or `fe` (any case).
    pub fn parse(text: &str) -> Option<Region> {
        match text.to_ascii_lowercase().as_str() {
            "na" => Some(Region::Na),
            "eu" => Some(Region::Eu),
            "fe" => Some(Region::Fe),
            _ => None,
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a selling partner signs in through Seller Central or Vendor Central.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccountType {
    /// A seller (Seller Central).
    #[default]
    Seller,
    /// A vendor (Vendor Central).
    Vendor,
}

impl AccountType {
    /// `"seller"` or `"vendor"`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Seller => "seller",
            AccountType::Vendor => "vendor",
        }
    }
}

/// Which Amazon API an LWA application was registered for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum AppKind {
    /// A Selling Partner API application (Developer Central).
    #[default]
    #[serde(rename = "sp-api")]
    SpApi,
    /// An Amazon Ads API application (an LWA security profile).
    #[serde(rename = "ads")]
    Ads,
}

/// What `POST /__fake/apps` takes. Missing ids and secrets are generated.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSpec {
    /// SP-API or Ads.
    pub kind: AppKind,
    /// LWA client id; generated (`amzn1.application-oa2-client.…`) when absent.
    pub client_id: Option<String>,
    /// Valid client secrets, current first, at most two; one is generated when empty.
    pub client_secrets: Vec<String>,
    /// SP-API application id (`amzn1.sp.solution.<uuid>`); generated for SP-API apps when absent.
    pub application_id: Option<String>,
    /// A draft SP-API app: its consent needs `version=beta`.
    pub draft: bool,
    /// Registered OAuth redirect URIs; the default list plus `--redirect-uri` extras when empty.
    pub redirect_uris: Vec<String>,
    /// Whether the app is enrolled for rotation notifications (default true); when false,
    /// `rotateApplicationClientSecret` answers Amazon's 400.
    pub rotation_enrolled: Option<bool>,
}

/// A registered application as the fake knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct App {
    /// SP-API or Ads.
    pub kind: AppKind,
    /// LWA client id.
    pub client_id: String,
    /// The client secrets valid now, current first.
    pub client_secrets: Vec<String>,
    /// SP-API application id (none for Ads apps).
    pub application_id: Option<String>,
    /// Draft (consent needs `version=beta`) or published.
    pub draft: bool,
    /// Registered OAuth redirect URIs; consent without `redirect_uri` uses the first.
    pub redirect_uris: Vec<String>,
    /// Enrolled for rotation notifications.
    pub rotation_enrolled: bool,
}

/// What `POST /__fake/sellers` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SellerSpec {
    /// The merchant token, e.g. `A1FAKESELLERNA`.
    pub selling_partner_id: String,
    /// The region the seller is registered in.
    pub region: Region,
    /// Seller or vendor.
    pub account_type: AccountType,
    /// Store name shown by the Sellers API; derived from the id when absent.
    pub store_name: Option<String>,
    /// Marketplaces the seller participates in; every marketplace of its region when empty.
    pub marketplace_ids: Vec<String>,
}

/// A selling partner (seller or vendor) the fake knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seller {
    /// The merchant token.
    pub selling_partner_id: String,
    /// The region it was first registered in.
    pub region: Region,
    /// Seller or vendor.
    pub account_type: AccountType,
    /// Store name shown by the Sellers API.
    pub store_name: String,
    /// Chosen marketplaces; empty means every marketplace of the authorized region.
    pub marketplace_ids: Vec<String>,
}

/// `accountInfo` of an Ads profile, in Amazon's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountInfo {
    /// Marketplace id, e.g. `ATVPDKIKX0DER`.
    pub marketplace_string_id: String,
    /// Account id (`ENTITY…` or a merchant token).
    pub id: String,
    /// `vendor`, `seller` or `agency`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Account name.
    pub name: String,
    /// Whether a valid payment method is on file.
    pub valid_payment_method: bool,
}

/// An Ads profile, in the shape `GET /v2/profiles` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Numeric profile id.
    pub profile_id: i64,
    /// Country code as the Ads API writes it (`US`, `UK`, `DE`, `JP`…).
    pub country_code: String,
    /// Currency code.
    pub currency_code: String,
    /// IANA time zone.
    pub timezone: String,
    /// The account behind the profile.
    pub account_info: AccountInfo,
}

/// A profile to register: only `countryCode` is needed, the rest is derived.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProfileSpec {
    /// Numeric profile id; generated when absent.
    pub profile_id: Option<i64>,
    /// Country code (`US`, `UK`/`GB`, `DE`, `JP`…); decides the profile's region.
    pub country_code: String,
    /// Currency code; the marketplace's when absent.
    pub currency_code: Option<String>,
    /// Time zone; the marketplace's when absent.
    pub timezone: Option<String>,
    /// Account info; derived from the advertiser when absent.
    pub account_info: Option<AccountInfo>,
}

/// An Amazon Marketing Cloud instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmcInstance {
    /// Instance id used in `/amc/reporting/{instanceId}/…`.
    pub instance_id: String,
    /// The AMC account id (`ENTITY…`) the `Amazon-Advertising-API-AdvertiserId` header must name.
    pub advertiser_id: String,
    /// The marketplace id the instance belongs to.
    pub marketplace_id: String,
    /// Display name.
    pub name: String,
}

/// What `POST /__fake/advertisers` takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AdvertiserSpec {
    /// Advertiser id; generated when absent.
    pub advertiser_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Profiles; one per region is generated when empty.
    pub profiles: Vec<ProfileSpec>,
    /// AMC instances.
    pub amc_instances: Vec<AmcInstanceSpec>,
}

/// An AMC instance to register.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AmcInstanceSpec {
    /// Instance id; generated when absent.
    pub instance_id: Option<String>,
    /// AMC account id; generated (`ENTITY…`) when absent.
    pub advertiser_id: Option<String>,
    /// Marketplace id; `ATVPDKIKX0DER` when absent.
    pub marketplace_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
}

/// An advertiser (the principal of Ads tokens).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advertiser {
    /// Advertiser id.
    pub advertiser_id: String,
    /// Display name.
    pub name: String,
    /// Profiles across every region.
    pub profiles: Vec<Profile>,
    /// AMC instances.
    pub amc_instances: Vec<AmcInstance>,
}

/// Whom a code or token speaks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Principal {
    /// A seller or vendor, authorized in one region.
    Seller {
        /// Merchant token.
        selling_partner_id: String,
        /// The region of the consent (authorizations are regional).
        region: Region,
        /// Seller or vendor (by the consent host).
        account_type: AccountType,
        /// Only under the `fe_authorization_per_marketplace` quirk: the one marketplace covered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marketplace_ids: Option<Vec<String>>,
    },
    /// An Ads advertiser (global).
    Advertiser {
        /// Advertiser id.
        advertiser_id: String,
    },
    /// A grantless (client_credentials) token.
    Grantless {
        /// Granted scopes.
        scopes: Vec<String>,
    },
}

/// What `POST /__fake/authorize` takes: a code issued without the consent UI, bound like one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthorizeSpec {
    /// The app's client id.
    pub client_id: String,
    /// SP-API apps: the seller; the region's default seller/vendor when absent.
    pub selling_partner_id: Option<String>,
    /// Ads apps: the advertiser; the default advertiser when absent.
    pub advertiser_id: Option<String>,
    /// SP-API: the region of the authorization (the seller's, else `na`).
    pub region: Option<Region>,
    /// SP-API: seller or vendor (the seller's, else `seller`).
    pub account_type: Option<AccountType>,
    /// When present, must be registered, and the token request must then send the same value.
    pub redirect_uri: Option<String>,
    /// PKCE challenge.
    pub code_challenge: Option<String>,
    /// `S256` or `plain` (default `plain`).
    pub code_challenge_method: Option<String>,
    /// Ads scope (default `advertising::campaign_management`).
    pub scope: Option<String>,
}

/// What `POST /__fake/appstore-authorize` takes: the seller clicking Authorize in the Appstore
/// (or the yearly re-authorization), which sends them to the app's Login URI.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AppstoreSpec {
    /// The SP-API application id.
    pub application_id: String,
    /// The seller; the region's default seller/vendor (as on the consent page) when absent.
    pub selling_partner_id: Option<String>,
    /// The app's OAuth Login URI (absolute `http`/`https`; may carry a query).
    pub login_uri: String,
    /// `na`, `eu` or `fe`: the seller's registered region when absent, else `na`.
    pub region: Option<String>,
    /// `seller` or `vendor`: the seller's registered type when absent, else `seller`.
    pub account_type: Option<String>,
}

/// What `POST /__fake/revoke` takes: one of the three forms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RevokeSpec {
    /// Revoke this refresh token and every access token it minted.
    pub refresh_token: Option<String>,
    /// Revoke this access token (or RDT).
    pub access_token: Option<String>,
    /// With `selling_partner_id` or `advertiser_id`: revoke the whole grant.
    pub client_id: Option<String>,
    /// The seller whose grant to the app is revoked.
    pub selling_partner_id: Option<String>,
    /// The advertiser whose grant to the app is revoked.
    pub advertiser_id: Option<String>,
}

/// Which traffic a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FaultTarget {
    /// The LWA token endpoint.
    #[default]
    Lwa,
    /// SP-API (incl. sandbox), Ads and AMC hosts.
    Api,
    /// Consent pages (Seller/Vendor Central, Ads consent).
    Consent,
}

/// "The next `count` matching calls fail with …".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultScript {
    /// How many matching calls fail.
    pub count: u64,
    /// HTTP status (default 500).
    pub status: Option<u16>,
    /// Error code in the body (default derived from the status).
    pub error: Option<String>,
    /// Close the connection without answering instead.
    pub drop: bool,
}

/// What `POST /__fake/faults` takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultSpec {
    /// LWA, API or consent traffic.
    pub target: FaultTarget,
    /// Only requests to this Amazon host.
    pub host: Option<String>,
    /// Only requests of this client id (LWA: the authenticating client; API: the token's app
    /// or the `Amazon-Advertising-API-ClientId` header).
    pub client_id: Option<String>,
    /// Only LWA requests carrying this refresh token.
    pub refresh_token: Option<String>,
    /// Only paths (after the host segment) starting with this.
    pub path_prefix: Option<String>,
    /// Sleep this long (real time) before answering.
    pub latency_ms: Option<u64>,
    /// Probability (0..1) of a 500.
    pub error_500_share: f64,
    /// Probability (0..1) of a 429.
    pub error_429_share: f64,
    /// Probability (0..1) of closing the connection without a response.
    pub drop_share: f64,
    /// Deterministic failures for the next N matching calls.
    pub script: Option<FaultScript>,
}

/// A fault as stored, with its id and what is left of its script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Id to delete it by.
    pub id: u64,
    /// The spec; `script.count` counts down as the script fires.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// How many requests this fault failed or dropped so far.
    pub fired: u64,
}

/// One LWA counter: calls per (grant type, outcome, client, refresh token, host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwaCount {
    /// `grant_type` as sent (empty when missing).
    pub grant_type: String,
    /// `ok`, the LWA error code, or `fault`.
    pub outcome: String,
    /// The client id as sent (empty when missing).
    pub client_id: String,
    /// The refresh token sent (refresh grant only).
    pub refresh_token: Option<String>,
    /// The LWA host called.
    pub host: String,
    /// How many calls.
    pub count: u64,
}

/// One API counter: calls per (host, method, path, status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCount {
    /// Amazon host.
    pub host: String,
    /// HTTP method.
    pub method: String,
    /// Path after the host segment, without the query.
    pub path: String,
    /// Status answered (0 for a dropped connection).
    pub status: u16,
    /// Whether a fault produced the answer.
    pub fault: bool,
    /// How many calls.
    pub count: u64,
}

/// Everything `GET /__fake/counters` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// LWA token endpoint calls.
    pub lwa: Vec<LwaCount>,
    /// Every other Amazon call (SP-API, Ads, AMC, consent pages).
    pub api: Vec<ApiCount>,
}

impl Counters {
    /// LWA calls with this `grant_type`, any outcome.
    pub fn lwa_calls(&self, grant_type: &str) -> u64 {
        self.lwa
            .iter()
            .filter(|c| c.grant_type == grant_type)
            .map(|c| c.count)
            .sum()
    }

    /// LWA calls with this `grant_type` and outcome (`ok`, an error code, or `fault`).
    pub fn lwa_outcomes(&self, grant_type: &str, outcome: &str) -> u64 {
        self.lwa
            .iter()
            .filter(|c| c.grant_type == grant_type && c.outcome == outcome)
            .map(|c| c.count)
            .sum()
    }

    /// Every LWA call.
    pub fn lwa_total(&self) -> u64 {
        self.lwa.iter().map(|c| c.count).sum()
    }

    /// LWA refresh calls that carried this refresh token, any outcome.
    pub fn lwa_calls_for_refresh_token(&self, refresh_token: &str) -> u64 {
        self.lwa
            .iter()
            .filter(|c| c.refresh_token.as_deref() == Some(refresh_token))
            .map(|c| c.count)
            .sum()
    }

    /// LWA calls made by this client id, any grant and outcome.
    pub fn lwa_calls_for_client(&self, client_id: &str) -> u64 {
        self.lwa
            .iter()
            .filter(|c| c.client_id == client_id)
            .map(|c| c.count)
            .sum()
    }

    /// API calls to this host and path, any method and status.
    pub fn api_calls(&self, host: &str, path: &str) -> u64 {
        self.api
            .iter()
            .filter(|c| c.host == host && c.path == path)
            .map(|c| c.count)
            .sum()
    }

    /// API calls to this host and path that were answered with `status`.
    pub fn api_calls_with_status(&self, host: &str, path: &str, status: u16) -> u64 {
        self.api
            .iter()
            .filter(|c| c.host == host && c.path == path && c.status == status)
            .map(|c| c.count)
            .sum()
    }

    /// Every API call.
    pub fn api_total(&self) -> u64 {
        self.api.iter().map(|c| c.count).sum()
    }
}

/// A request as the fake received it (`GET /__fake/requests`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Sequence number, increasing.
    pub seq: u64,
    /// Fake-clock time of arrival (ms since the epoch).
    pub at_ms: i64,
    /// HTTP method.
    pub method: String,
    /// Amazon host (the first path segment).
    pub host: String,
    /// Path after the host segment.
    pub path: String,
    /// Raw query string (empty when none).
    pub query: String,
    /// Headers, names lower-cased; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Body as text (lossy UTF-8).
    pub body: String,
}

/// `GET /__fake/clock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockState {
    /// Fake now, ms since the Unix epoch.
    pub now_ms: i64,
    /// Offset from the system clock, ms.
    pub offset_ms: i64,
}

/// An authorization code as issued (consent page or control API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRecord {
    /// The code.
    pub code: String,
    /// The app.
    pub client_id: String,
    /// The host that issued it (a Seller/Vendor Central host, an Ads consent host, or `__fake`).
    pub host: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// The redirect URI it was delivered to.
    pub redirect_uri: String,
    /// Whether the consent request named the redirect URI.
    pub redirect_uri_given: bool,
    /// Ads scope.
    pub scope: Option<String>,
    /// Fake-clock issue time.
    pub issued_at_ms: i64,
    /// Exchanged already.
    pub redeemed: bool,
}

/// `POST /__fake/token-info`: what the fake knows about a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// `access`, `refresh` or `restricted_data`.
    pub kind: String,
    /// The app.
    pub client_id: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// Fake-clock issue time.
    pub issued_at_ms: i64,
    /// Fake-clock expiry (none for refresh tokens that never expire).
    pub expires_at_ms: Option<i64>,
    /// Revoked.
    pub revoked: bool,
    /// The host of the consent that started the grant, if any.
    pub authorized_via: Option<String>,
    /// For access tokens minted by the refresh grant: that refresh token.
    pub refresh_token: Option<String>,
    /// Ads scope of the grant (refresh tokens).
    pub scope: Option<String>,
}

/// `POST /__fake/rates`: an operation's token bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateSpec {
    /// Operation name (e.g. `getMarketplaceParticipations`, `getProfiles`, `lwaToken`).
    pub operation: String,
    /// Requests per second.
    pub rate: f64,
    /// Bucket size.
    pub burst: u32,
}

/// `POST /__fake/payloads`: a large body served on the fly at `GET {host}{path}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSpec {
    /// An SP-API or Ads host (`sellingpartnerapi-na.amazon.com`, `advertising-api.amazon.com`…).
    pub host: String,
    /// The path after the host, starting with `/` (the query is not part of it).
    pub path: String,
    /// Exact length of the body, in bytes.
    pub bytes: u64,
    /// `Content-Type` of the answer; `application/octet-stream` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
}
