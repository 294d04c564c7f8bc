//! Everything the fake remembers: apps, principals, codes, tokens, counters, faults.
//!
//! One mutex guards it all; handlers take it briefly and never across an `.await`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::Value;

use crate::clock::FakeClock;
use crate::config::{FakeConfig, Quirks};
use crate::defaults;
use crate::hosts::{self, MARKETPLACES};
use crate::ids;
use crate::model::{
    AccountInfo, AccountType, Advertiser, AdvertiserSpec, AmcInstance, App, AppKind, AppSpec,
    AuthorizationRecord, Fault, PayloadSpec, Principal, Profile, RecordedRequest, Region, Seller, SellerSpec,
    TokenInfo,
};
use crate::sandbox::Sandbox;

/// Codes expire five minutes after issue (DG2021, ADS-DOCS).
pub const CODE_TTL_MS: i64 = 5 * 60 * 1000;
/// RDTs live one hour (TOK2021).
pub const RDT_TTL_SECS: i64 = 3600;
/// A secret replaced by rotation keeps working this long (SPAPI-ROTATE-API).
pub const RETIRED_SECRET_GRACE_MS: i64 = 7 * 86_400_000;
/// Rotated secrets must be rotated again within 180 days (SPAPI-ROTATE).
pub const SECRET_LIFETIME_MS: i64 = 180 * 86_400_000;
/// Published SP-API apps must be re-authorized every 365 days (SPAPI-RENEW).
pub const AUTHORIZATION_LIFETIME_MS: i64 = 365 * 86_400_000;
/// Appstore `amazon_state` values live ten minutes (the fake's choice; AMAZON.md is silent).
pub const AMAZON_STATE_TTL_MS: i64 = 10 * 60 * 1000;
/// How many requests `GET /__fake/requests` keeps.
pub const MAX_RECORDED: usize = 1000;

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The fake clock.
    pub clock: FakeClock,
    /// Everything else.
    pub inner: Mutex<Inner>,
    /// The embedded models' sandbox answers.
    pub sandbox: Sandbox,
}

impl Shared {
    /// A fresh fake with the default apps and principals.
    pub fn new(config: FakeConfig) -> Arc<Shared> {
        let shared = Shared {
            clock: FakeClock::default(),
            inner: Mutex::new(Inner::new(config)),
            sandbox: Sandbox::load(),
        };
        let now = shared.clock.now_ms();
        shared.inner.lock().seed_defaults(now);
        Arc::new(shared)
    }

    /// Fake now in ms.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Runtime settings (start-up config the control API may change).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Quirks.
    pub quirks: Quirks,
    /// Access-token TTL, seconds.
    pub access_token_ttl: u64,
    /// Consent pages approve at once.
    pub auto_approve: bool,
    /// Extra redirect URIs of the default apps (and of registered apps without their own).
    pub extra_redirect_uris: Vec<String>,
}

/// A client secret and when it stops working.
#[derive(Debug, Clone)]
pub struct SecretRecord {
    /// The secret.
    pub value: String,
    /// Fake-clock expiry, if any.
    pub expires_ms: Option<i64>,
}

/// An app as stored.
#[derive(Debug, Clone)]
pub struct AppRecord {
    /// SP-API or Ads.
    pub kind: AppKind,
    /// Client id.
    pub client_id: String,
    /// SP-API application id.
    pub application_id: Option<String>,
    /// Draft app.
    pub draft: bool,
    /// Registered redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Secrets, current first.
    pub secrets: Vec<SecretRecord>,
    /// Enrolled for rotation notifications.
    pub rotation_enrolled: bool,
}

impl AppRecord {
    /// Whether `secret` is one of the app's secrets valid at `now`.
    pub fn secret_valid(&self, secret: &str, now: i64) -> bool {
        self.secrets
            .iter()
            .any(|s| s.value == secret && s.expires_ms.is_none_or(|e| now < e))
    }

    /// The public view.
    pub fn view(&self, now: i64) -> App {
        App {
            kind: self.kind,
            client_id: self.client_id.clone(),
            client_secrets: self
                .secrets
                .iter()
                .filter(|s| s.expires_ms.is_none_or(|e| now < e))
                .map(|s| s.value.clone())
                .collect(),
            application_id: self.application_id.clone(),
            draft: self.draft,
            redirect_uris: self.redirect_uris.clone(),
            rotation_enrolled: self.rotation_enrolled,
        }
    }
}

/// PKCE challenge bound to a code.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// The challenge.
    pub value: String,
    /// `S256` or `plain`.
    pub method: String,
}

/// An authorization code as stored.
#[derive(Debug, Clone)]
pub struct CodeRecord {
    /// The app.
    pub client_id: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// Where it was delivered.
    pub redirect_uri: String,
    /// Whether the consent request named the redirect URI.
    pub redirect_given: bool,
    /// PKCE.
    pub challenge: Option<Challenge>,
    /// Issue time.
    pub issued_ms: i64,
    /// Redeemed.
    pub used: bool,
    /// Issuing host.
    pub host: String,
    /// Ads scope.
    pub scope: Option<String>,
}

/// An `amazon_state` of the Appstore-initiated workflow, as stored.
#[derive(Debug, Clone)]
pub struct AmazonStateRecord {
    /// The application the seller authorized in the Appstore.
    pub application_id: String,
    /// The seller who clicked Authorize.
    pub selling_partner_id: String,
    /// Region of the `amazon_callback_uri` host.
    pub region: Region,
    /// Seller or Vendor Central, by the `amazon_callback_uri` host.
    pub account_type: AccountType,
    /// Issue time.
    pub issued_ms: i64,
    /// Consumed by a confirmation.
    pub used: bool,
}

/// A refresh token as stored.
#[derive(Debug, Clone)]
pub struct RefreshRecord {
    /// The app.
    pub client_id: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// Issue time.
    pub issued_ms: i64,
    /// When it stops working (365-day re-authorization), if ever.
    pub expires_ms: Option<i64>,
    /// Revoked.
    pub revoked: bool,
    /// Consent host that started the grant.
    pub host: Option<String>,
    /// Ads scope.
    pub scope: Option<String>,
}

/// One resource of an RDT.
#[derive(Debug, Clone)]
pub struct RdtResource {
    /// HTTP method.
    pub method: String,
    /// Specific path or template with `{placeholders}`.
    pub path: String,
    /// Requested data elements.
    pub data_elements: Vec<String>,
}

/// An access token (or RDT) as stored.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// The app.
    pub client_id: String,
    /// Whom it speaks for.
    pub principal: Principal,
    /// Issue time.
    pub issued_ms: i64,
    /// Expiry.
    pub expires_ms: i64,
    /// Revoked.
    pub revoked: bool,
    /// The refresh token that minted it.
    pub refresh_token: Option<String>,
    /// RDT resources (none for plain access tokens).
    pub rdt: Option<Vec<RdtResource>>,
    /// Consent host that started the grant.
    pub host: Option<String>,
}

/// Token bucket state.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// Counter key of the LWA endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LwaKey {
    /// grant_type as sent.
    pub grant_type: String,
    /// ok / error code / fault.
    pub outcome: String,
    /// client id as sent.
    pub client_id: String,
    /// refresh token sent.
    pub refresh_token: Option<String>,
    /// host.
    pub host: String,
}

/// Counter key of API calls.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiKey {
    /// host.
    pub host: String,
    /// method.
    pub method: String,
    /// path.
    pub path: String,
    /// status.
    pub status: u16,
    /// produced by a fault.
    pub fault: bool,
}

/// Everything mutable.
#[derive(Debug)]
pub struct Inner {
    /// Runtime settings.
    pub settings: Settings,
    /// Apps by client id.
    pub apps: BTreeMap<String, AppRecord>,
    /// Sellers by id.
    pub sellers: BTreeMap<String, Seller>,
    /// Advertisers by id.
    pub advertisers: BTreeMap<String, Advertiser>,
    /// Codes.
    pub codes: HashMap<String, CodeRecord>,
    /// Appstore `amazon_state` values.
    pub amazon_states: HashMap<String, AmazonStateRecord>,
    /// Refresh tokens.
    pub refresh_tokens: HashMap<String, RefreshRecord>,
    /// Access tokens and RDTs.
    pub access_tokens: HashMap<String, AccessRecord>,
    prune_access_at: usize,
    /// LWA counters.
    pub lwa_counts: HashMap<LwaKey, u64>,
    /// API counters.
    pub api_counts: HashMap<ApiKey, u64>,
    /// Recorded requests.
    pub requests: VecDeque<RecordedRequest>,
    next_seq: u64,
    /// Faults.
    pub faults: Vec<Fault>,
    next_fault_id: u64,
    /// Notifications Amazon would have sent.
    pub notifications: Vec<Value>,
    /// Operation rates (rate, burst).
    pub rates: HashMap<String, (f64, u32)>,
    buckets: HashMap<(String, String), Bucket>,
    /// Notification destinations per client id.
    pub destinations: BTreeMap<String, Vec<Value>>,
    /// AMC executions by (instance, execution id).
    pub amc_executions: HashMap<(String, String), Value>,
    /// Streamed payloads by (host, path).
    pub payloads: BTreeMap<(String, String), PayloadSpec>,
}

/// The default rate and burst of every rate-limited operation.
pub const DEFAULT_RATES: &[(&str, f64, u32)] = &[
    ("getMarketplaceParticipations", 0.016, 15),
    ("getAccount", 0.016, 15),
    ("createRestrictedDataToken", 1.0, 10),
    ("getOrderAddress", 0.5, 30),
    ("getOrder", 0.5, 30),
    ("getDestinations", 1.0, 5),
    ("createDestination", 1.0, 5),
    ("getDestination", 1.0, 5),
    ("deleteDestination", 1.0, 5),
    ("rotateApplicationClientSecret", 0.0167, 1),
    ("sandbox", 5.0, 15),
    ("getProfiles", 10.0, 20),
    ("listAmcAccounts", 1.0, 5),
    ("createWorkflowExecution", 0.5, 10),
    ("getWorkflowExecution", 5.0, 10),
    ("listSponsoredProductsCampaigns", 10.0, 20),
    ("downloadPayload", 10.0, 20),
];

/// The outcome of taking a token from a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Throttle {
    /// Allowed; the operation's rate (none when unlimited).
    Allowed(Option<f64>),
    /// Refused; seconds until a token is there.
    Throttled(f64),
}

impl Inner {
    fn new(config: FakeConfig) -> Inner {
        Inner {
            settings: Settings {
                quirks: config.quirks,
                access_token_ttl: config.access_token_ttl,
                auto_approve: config.auto_approve,
                extra_redirect_uris: config.extra_redirect_uris,
            },
            apps: BTreeMap::new(),
            sellers: BTreeMap::new(),
            advertisers: BTreeMap::new(),
            codes: HashMap::new(),
            amazon_states: HashMap::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            prune_access_at: 10_000,
            lwa_counts: HashMap::new(),
            api_counts: HashMap::new(),
            requests: VecDeque::new(),
            next_seq: 1,
            faults: Vec::new(),
            next_fault_id: 1,
            notifications: Vec::new(),
            rates: DEFAULT_RATES
                .iter()
                .map(|(op, rate, burst)| ((*op).to_owned(), (*rate, *burst)))
                .collect(),
            buckets: HashMap::new(),
            destinations: BTreeMap::new(),
            amc_executions: HashMap::new(),
            payloads: BTreeMap::new(),
        }
    }

    fn default_redirect_uris(&self) -> Vec<String> {
        defaults::DEFAULT_REDIRECT_URIS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(self.settings.extra_redirect_uris.iter().cloned())
            .collect()
    }

    fn seed_defaults(&mut self, now: i64) {
        let redirect_uris = self.default_redirect_uris();
        for (kind, id, current, previous, app_id) in [
            (
                AppKind::SpApi,
                defaults::SP_API_CLIENT_ID,
                defaults::SP_API_CLIENT_SECRET,
                defaults::SP_API_PREVIOUS_CLIENT_SECRET,
                Some(defaults::SP_API_APPLICATION_ID),
            ),
            (
                AppKind::Ads,
                defaults::ADS_CLIENT_ID,
                defaults::ADS_CLIENT_SECRET,
                defaults::ADS_PREVIOUS_CLIENT_SECRET,
                None,
            ),
        ] {
            let spec = AppSpec {
                kind,
                client_id: Some(id.to_owned()),
                client_secrets: vec![current.to_owned(), previous.to_owned()],
                application_id: app_id.map(str::to_owned),
                draft: false,
                redirect_uris: redirect_uris.clone(),
                rotation_enrolled: Some(true),
            };
            // Cannot fail: the spec is well formed.
            let _ = self.register_app(spec, now);
        }
        for (id, region, account_type, store) in [
            (
                defaults::SELLER_NA,
                Region::Na,
                AccountType::Seller,
                "Fake Store NA",
            ),
            (
                defaults::SELLER_EU,
                Region::Eu,
                AccountType::Seller,
                "Fake Store EU",
            ),
            (
                defaults::SELLER_FE,
                Region::Fe,
                AccountType::Seller,
                "Fake Store FE",
            ),
            (
                defaults::VENDOR_NA,
                Region::Na,
                AccountType::Vendor,
                "Fake Vendor NA",
            ),
        ] {
            let _ = self.register_seller(SellerSpec {
                selling_partner_id: id.to_owned(),
                region,
                account_type,
                store_name: Some(store.to_owned()),
                marketplace_ids: Vec::new(),
            });
        }
        let _ = self.register_advertiser(AdvertiserSpec {
            advertiser_id: Some(defaults::ADVERTISER.to_owned()),
            name: Some("Fake Advertiser".to_owned()),
            profiles: [
                (defaults::PROFILE_NA, "US"),
                (defaults::PROFILE_EU, "UK"),
                (defaults::PROFILE_FE, "JP"),
            ]
            .into_iter()
            .map(|(id, country)| crate::model::ProfileSpec {
                profile_id: Some(id),
                country_code: country.to_owned(),
                ..Default::default()
            })
            .collect(),
            amc_instances: vec![crate::model::AmcInstanceSpec {
                instance_id: Some(defaults::AMC_INSTANCE.to_owned()),
                advertiser_id: Some(defaults::AMC_ADVERTISER_ID.to_owned()),
                marketplace_id: Some(defaults::AMC_MARKETPLACE_ID.to_owned()),
                name: Some("Fake AMC instance".to_owned()),
            }],
        });
    }

    /// Registers (or replaces) an app.
    pub fn register_app(&mut self, spec: AppSpec, now: i64) -> Result<App, String> {
        if spec.client_secrets.len() > 2 {
            return Err("an app has at most two client secrets".to_owned());
        }
        if spec.client_secrets.iter().any(|s| s.is_empty()) {
            return Err("client secrets must not be empty".to_owned());
        }
        let client_id = spec
            .client_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(ids::client_id);
        let secrets = if spec.client_secrets.is_empty() {
            vec![ids::client_secret()]
        } else {
            spec.client_secrets
        };
        let application_id = match spec.kind {
            AppKind::SpApi => Some(
                spec.application_id
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("amzn1.sp.solution.{}", ids::uuid())),
            ),
            AppKind::Ads => spec.application_id.filter(|s| !s.is_empty()),
        };
        if let Some(app_id) = &application_id
            && self
                .apps
                .values()
                .any(|a| a.client_id != client_id && a.application_id.as_deref() == Some(app_id.as_str()))
        {
            return Err(format!("application_id {app_id} belongs to another app"));
        }
        let redirect_uris = if spec.redirect_uris.is_empty() {
            self.default_redirect_uris()
        } else {
            spec.redirect_uris
        };
        let record = AppRecord {
            kind: spec.kind,
            client_id: client_id.clone(),
            application_id,
            draft: spec.draft,
            redirect_uris,
            secrets: secrets
                .into_iter()
                .map(|value| SecretRecord {
                    value,
                    expires_ms: None,
                })
                .collect(),
            rotation_enrolled: spec.rotation_enrolled.unwrap_or(true),
        };
        let view = record.view(now);
        self.apps.insert(client_id, record);
        Ok(view)
    }

    /// The app with this SP-API application id.
    pub fn app_by_application_id(&self, application_id: &str) -> Option<&AppRecord> {
        self.apps
            .values()
            .find(|a| a.application_id.as_deref() == Some(application_id))
    }

    /// Registers (or replaces) a seller.
    pub fn register_seller(&mut self, spec: SellerSpec) -> Result<Seller, String> {
        validate_selling_partner_id(&spec.selling_partner_id)?;
        for id in &spec.marketplace_ids {
            if hosts::marketplace(id).is_none() {
                return Err(format!("unknown marketplace id {id}"));
            }
        }
        let seller = Seller {
            store_name: spec
                .store_name
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| format!("Store {}", spec.selling_partner_id)),
            selling_partner_id: spec.selling_partner_id,
            region: spec.region,
            account_type: spec.account_type,
            marketplace_ids: spec.marketplace_ids,
        };
        self.sellers
            .insert(seller.selling_partner_id.clone(), seller.clone());
        Ok(seller)
    }

    /// The seller with this id, registering it (in `region`, as `account_type`) when new, so
    /// the same id always has the same identity.
    pub fn seller_or_register(
        &mut self,
        id: &str,
        region: Region,
        account_type: AccountType,
    ) -> Result<Seller, String> {
        if let Some(seller) = self.sellers.get(id) {
            return Ok(seller.clone());
        }
        self.register_seller(SellerSpec {
            selling_partner_id: id.to_owned(),
            region,
            account_type,
            store_name: None,
            marketplace_ids: Vec::new(),
        })
    }

    /// Registers (or replaces) an advertiser.
    pub fn register_advertiser(&mut self, spec: AdvertiserSpec) -> Result<Advertiser, String> {
        let advertiser_id = spec
            .advertiser_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("ENTITY{}", ids::upper_alnum(14)));
        validate_selling_partner_id(&advertiser_id)?;
        let name = spec.name.unwrap_or_else(|| format!("Advertiser {advertiser_id}"));
        let specs = if spec.profiles.is_empty() {
            ["US", "UK", "JP"]
                .into_iter()
                .map(|c| crate::model::ProfileSpec {
                    country_code: c.to_owned(),
                    ..Default::default()
                })
                .collect()
        } else {
            spec.profiles
        };
        let mut profiles = Vec::new();
        for p in specs {
            let market = hosts::marketplace_by_country(&p.country_code)
                .ok_or_else(|| format!("unknown countryCode {}", p.country_code))?;
            let profile_id = match p.profile_id {
                Some(id) => id,
                None => 1_000_000_000_000 + i64::try_from(ids::below(8_999_999_999_999)).unwrap_or(0),
            };
            if self
                .advertisers
                .values()
                .filter(|a| a.advertiser_id != advertiser_id)
                .flat_map(|a| &a.profiles)
                .any(|q| q.profile_id == profile_id)
            {
                return Err(format!("profile {profile_id} belongs to another advertiser"));
            }
            profiles.push(Profile {
                profile_id,
                country_code: market.ads_country_code.to_owned(),
                currency_code: p.currency_code.unwrap_or_else(|| market.currency.to_owned()),
                timezone: p.timezone.unwrap_or_else(|| market.timezone.to_owned()),
                account_info: p.account_info.unwrap_or_else(|| AccountInfo {
                    marketplace_string_id: market.id.to_owned(),
                    id: advertiser_id.clone(),
                    kind: "vendor".to_owned(),
                    name: format!("{name} {}", market.ads_country_code),
                    valid_payment_method: true,
                }),
            });
        }
        let mut amc_instances = Vec::new();
        for i in spec.amc_instances {
            let marketplace_id = i
                .marketplace_id
                .unwrap_or_else(|| defaults::AMC_MARKETPLACE_ID.to_owned());
            if hosts::marketplace(&marketplace_id).is_none() {
                return Err(format!("unknown marketplace id {marketplace_id}"));
            }
            amc_instances.push(AmcInstance {
                instance_id: i.instance_id.unwrap_or_else(|| format!("amc{}", ids::hex(8))),
                advertiser_id: i
                    .advertiser_id
                    .unwrap_or_else(|| format!("ENTITY{}", ids::upper_alnum(12))),
                marketplace_id,
                name: i.name.unwrap_or_else(|| "AMC instance".to_owned()),
            });
        }
        let advertiser = Advertiser {
            advertiser_id: advertiser_id.clone(),
            name,
            profiles,
            amc_instances,
        };
        self.advertisers.insert(advertiser_id, advertiser.clone());
        Ok(advertiser)
    }

    /// The advertiser with this id, registering it (with one profile per region) when new.
    pub fn advertiser_or_register(&mut self, id: &str) -> Result<Advertiser, String> {
        if let Some(a) = self.advertisers.get(id) {
            return Ok(a.clone());
        }
        self.register_advertiser(AdvertiserSpec {
            advertiser_id: Some(id.to_owned()),
            ..Default::default()
        })
    }

    /// Issues an authorization code.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_code(
        &mut self,
        client_id: &str,
        principal: Principal,
        redirect_uri: &str,
        redirect_given: bool,
        challenge: Option<Challenge>,
        host: &str,
        scope: Option<String>,
        now: i64,
    ) -> String {
        let code = ids::authorization_code();
        // Prune codes that can no longer be redeemed, keeping a day of history for listings.
        if self.codes.len() > 10_000 {
            self.codes.retain(|_, c| now - c.issued_ms < 86_400_000);
        }
        self.codes.insert(
            code.clone(),
            CodeRecord {
                client_id: client_id.to_owned(),
                principal,
                redirect_uri: redirect_uri.to_owned(),
                redirect_given,
                challenge,
                issued_ms: now,
                used: false,
                host: host.to_owned(),
                scope,
            },
        );
        code
    }

    /// Issues an Appstore `amazon_state`.
    pub fn issue_amazon_state(&mut self, record: AmazonStateRecord) -> String {
        let value = ids::amazon_state();
        if self.amazon_states.len() > 10_000 {
            let now = record.issued_ms;
            self.amazon_states.retain(|_, s| now - s.issued_ms < 86_400_000);
        }
        self.amazon_states.insert(value.clone(), record);
        value
    }

    /// Issues a refresh token.
    pub fn issue_refresh_token(&mut self, record: RefreshRecord) -> String {
        let token = ids::refresh_token();
        self.refresh_tokens.insert(token.clone(), record);
        token
    }

    /// Issues an access token (or RDT when `rdt` is set).
    pub fn issue_access_token(&mut self, record: AccessRecord, now: i64) -> String {
        let token = if record.rdt.is_some() {
            ids::restricted_data_token()
        } else {
            ids::access_token()
        };
        if self.access_tokens.len() >= self.prune_access_at {
            // Keep expired tokens for a day so they still answer "expired", then forget them.
            self.access_tokens.retain(|_, t| t.expires_ms + 86_400_000 > now);
            self.prune_access_at = (self.access_tokens.len() * 2).max(10_000);
        }
        self.access_tokens.insert(token.clone(), record);
        token
    }

    /// Registers a rotated secret: the new one becomes current, the old current works for seven
    /// more days, older ones stop. Returns (new secret, new expiry, old expiry).
    pub fn rotate_secret(&mut self, client_id: &str, now: i64) -> Option<(String, i64, i64)> {
        let app = self.apps.get_mut(client_id)?;
        let new_secret = ids::client_secret();
        let new_expiry = now + SECRET_LIFETIME_MS;
        let old_expiry = now + RETIRED_SECRET_GRACE_MS;
        let mut secrets = vec![SecretRecord {
            value: new_secret.clone(),
            expires_ms: Some(new_expiry),
        }];
        if let Some(old) = app.secrets.first() {
            secrets.push(SecretRecord {
                value: old.value.clone(),
                expires_ms: Some(old.expires_ms.map_or(old_expiry, |e| e.min(old_expiry))),
            });
        }
        app.secrets = secrets;
        Some((new_secret, new_expiry, old_expiry))
    }

    /// Revokes a refresh token and the access tokens it minted; returns how many were revoked.
    pub fn revoke_refresh_token(&mut self, token: &str) -> usize {
        let mut n = 0;
        if let Some(r) = self.refresh_tokens.get_mut(token)
            && !r.revoked
        {
            r.revoked = true;
            n += 1;
        }
        for a in self.access_tokens.values_mut() {
            if !a.revoked && a.refresh_token.as_deref() == Some(token) {
                a.revoked = true;
                n += 1;
            }
        }
        n
    }

    /// Revokes every code and token of (app, principal matching `matches`).
    pub fn revoke_grant(&mut self, client_id: &str, matches: impl Fn(&Principal) -> bool) -> usize {
        let mut n = 0;
        for c in self.codes.values_mut() {
            if c.client_id == client_id && matches(&c.principal) {
                c.used = true;
            }
        }
        for r in self.refresh_tokens.values_mut() {
            if !r.revoked && r.client_id == client_id && matches(&r.principal) {
                r.revoked = true;
                n += 1;
            }
        }
        for a in self.access_tokens.values_mut() {
            if !a.revoked && a.client_id == client_id && matches(&a.principal) {
                a.revoked = true;
                n += 1;
            }
        }
        n
    }

    /// Takes a token from the bucket of `operation` for `key`.
    pub fn throttle(&mut self, operation: &str, key: &str, now: i64) -> Throttle {
        let Some(&(rate, burst)) = self.rates.get(operation) else {
            return Throttle::Allowed(None);
        };
        let burst = f64::from(burst.max(1));
        let bucket = self
            .buckets
            .entry((operation.to_owned(), key.to_owned()))
            .or_insert(Bucket {
                tokens: burst,
                last_ms: now,
            });
        let elapsed = (now - bucket.last_ms).max(0) as f64 / 1000.0;
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.last_ms = now.max(bucket.last_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Throttle::Allowed(Some(rate))
        } else if rate > 0.0 {
            Throttle::Throttled((1.0 - bucket.tokens) / rate)
        } else {
            Throttle::Throttled(3600.0)
        }
    }

    /// Sets an operation's rate and burst, refilling its buckets.
    pub fn set_rate(&mut self, operation: &str, rate: f64, burst: u32) {
        self.rates.insert(operation.to_owned(), (rate, burst));
        self.buckets.retain(|(op, _), _| op != operation);
    }

    /// The payload registered at `host` + `path`, if any.
    pub fn payload(&self, host: &str, path: &str) -> Option<PayloadSpec> {
        self.payloads.get(&(host.to_owned(), path.to_owned())).cloned()
    }

    /// Records a request for `GET /__fake/requests`.
    pub fn record_request(&mut self, mut request: RecordedRequest) {
        request.seq = self.next_seq;
        self.next_seq += 1;
        if self.requests.len() >= MAX_RECORDED {
            self.requests.pop_front();
        }
        self.requests.push_back(request);
    }

    /// Counts an LWA call.
    pub fn count_lwa(&mut self, key: LwaKey) {
        *self.lwa_counts.entry(key).or_default() += 1;
    }

    /// Counts an API call.
    pub fn count_api(&mut self, key: ApiKey) {
        *self.api_counts.entry(key).or_default() += 1;
    }

    /// Adds a fault; returns its id.
    pub fn add_fault(&mut self, spec: crate::model::FaultSpec) -> u64 {
        let id = self.next_fault_id;
        self.next_fault_id += 1;
        self.faults.push(Fault { id, spec, fired: 0 });
        id
    }

    /// What the fake knows about a token.
    pub fn token_info(&self, token: &str) -> Option<TokenInfo> {
        if let Some(a) = self.access_tokens.get(token) {
            return Some(TokenInfo {
                kind: if a.rdt.is_some() {
                    "restricted_data"
                } else {
                    "access"
                }
                .to_owned(),
                client_id: a.client_id.clone(),
                principal: a.principal.clone(),
                issued_at_ms: a.issued_ms,
                expires_at_ms: Some(a.expires_ms),
                revoked: a.revoked,
                authorized_via: a.host.clone(),
                refresh_token: a.refresh_token.clone(),
                scope: None,
            });
        }
        self.refresh_tokens.get(token).map(|r| TokenInfo {
            kind: "refresh".to_owned(),
            client_id: r.client_id.clone(),
            principal: r.principal.clone(),
            issued_at_ms: r.issued_ms,
            expires_at_ms: r.expires_ms,
            revoked: r.revoked,
            authorized_via: r.host.clone(),
            refresh_token: None,
            scope: r.scope.clone(),
        })
    }

    /// Every code issued, oldest first.
    pub fn authorizations(&self) -> Vec<AuthorizationRecord> {
        let mut out: Vec<AuthorizationRecord> = self
            .codes
            .iter()
            .map(|(code, c)| AuthorizationRecord {
                code: code.clone(),
                client_id: c.client_id.clone(),
                host: c.host.clone(),
                principal: c.principal.clone(),
                redirect_uri: c.redirect_uri.clone(),
                redirect_uri_given: c.redirect_given,
                scope: c.scope.clone(),
                issued_at_ms: c.issued_ms,
                redeemed: c.used,
            })
            .collect();
        out.sort_by(|a, b| a.issued_at_ms.cmp(&b.issued_at_ms).then(a.code.cmp(&b.code)));
        out
    }

    /// The marketplaces a seller principal covers.
    pub fn seller_marketplaces(&self, principal: &Principal) -> Vec<&'static hosts::Marketplace> {
        let Principal::Seller {
            selling_partner_id,
            region,
            marketplace_ids,
            ..
        } = principal
        else {
            return Vec::new();
        };
        if let Some(ids) = marketplace_ids {
            return ids.iter().filter_map(|id| hosts::marketplace(id)).collect();
        }
        let chosen: Vec<&'static hosts::Marketplace> = self
            .sellers
            .get(selling_partner_id)
            .map(|s| {
                s.marketplace_ids
                    .iter()
                    .filter_map(|id| hosts::marketplace(id))
                    .filter(|m| m.region == *region)
                    .collect()
            })
            .unwrap_or_default();
        if chosen.is_empty() {
            MARKETPLACES.iter().filter(|m| m.region == *region).collect()
        } else {
            chosen
        }
    }
}

/// Selling partner and advertiser ids: 1 to 64 letters, digits, `.`, `-` or `_`.
pub fn validate_selling_partner_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "invalid id {id:?}: use 1 to 64 letters, digits, '.', '-' or '_'"
        ));
    }
    Ok(())
}
