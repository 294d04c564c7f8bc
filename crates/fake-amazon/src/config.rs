//! How a fake is configured at start, and the switches between readings of Amazon's docs.

use serde::{Deserialize, Serialize};

/// Start-up configuration of a [`crate::FakeAmazon`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeConfig {
    /// Consent pages approve at once with the default principal and redirect immediately.
    pub auto_approve: bool,
    /// `expires_in` of LWA access tokens, seconds (Amazon: 3600).
    pub access_token_ttl: u64,
    /// Redirect URIs registered on the default apps besides the default ones.
    pub extra_redirect_uris: Vec<String>,
    /// Switches between readings of Amazon's behaviour.
    pub quirks: Quirks,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            auto_approve: false,
            access_token_ttl: 3600,
            extra_redirect_uris: Vec::new(),
            quirks: Quirks::default(),
        }
    }
}

/// Switches for behaviour Amazon's sources disagree on or leave unconfirmed. The default of each
/// is the reading the README names; the other reading is one field away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quirks {
    /// The refresh grant issues a new refresh token (the old one stays valid). Default: the same
    /// token is returned (SP-API and Ads docs).
    pub rotate_refresh_tokens: bool,
    /// `expires_in` as a JSON string (`"3600"`), as an Alexa doc shows.
    pub expires_in_as_string: bool,
    /// The `error` of LWA 500s: `server_error` (default) or `ServerError`.
    pub server_error_code: String,
    /// SP-API apps may use `api.amazon.co.uk` and `api.amazon.co.jp` too. Default: only
    /// `api.amazon.com` (the only documented host); others answer `unauthorized_client`.
    pub sp_api_on_regional_lwa_hosts: bool,
    /// Wrap the RDT response in `{"payload": …}` as the 2021 tutorial did.
    pub rdt_payload_wrapper: bool,
    /// client_credentials responses carry `scope`. Default: no `scope` field.
    pub client_credentials_scope_in_response: bool,
    /// Self-authorized refresh tokens expire 365 days after issue like consent-issued ones of
    /// SP-API apps. Default: they never expire.
    pub self_authorization_expires: bool,
    /// Serve the Seller Central hosts known only from third-party lists (IE, BE, ZA, SA, EG).
    /// Default: served.
    pub newer_seller_central_hosts: bool,
    /// FE consents cover only the consent host's marketplace. Default: a consent covers the
    /// whole region.
    pub fe_authorization_per_marketplace: bool,
    /// Notifications carry the third-party-reported `payloadVersion` and `eventTime` fields.
    pub notification_envelope_extras: bool,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            rotate_refresh_tokens: false,
            expires_in_as_string: false,
            server_error_code: "server_error".to_owned(),
            sp_api_on_regional_lwa_hosts: false,
            rdt_payload_wrapper: false,
            client_credentials_scope_in_response: false,
            self_authorization_expires: false,
            newer_seller_central_hosts: true,
            fe_authorization_per_marketplace: false,
            notification_envelope_extras: false,
        }
    }
}
