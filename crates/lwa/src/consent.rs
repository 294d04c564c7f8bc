//! Consent (authorization) URLs: where a seller, vendor or advertiser approves an app.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::endpoints::Endpoints;
use crate::region::{Marketplace, Region};
use crate::secret::CodeVerifier;

/// Whether an SP-API account signs in at Seller Central or at Vendor Central.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AccountType {
    /// A seller (Seller Central).
    #[default]
    Seller,
    /// A vendor (Vendor Central).
    Vendor,
}

impl AccountType {
    /// `seller` or `vendor`.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountType::Seller => "seller",
            AccountType::Vendor => "vendor",
        }
    }
}

/// The consent URL of an SP-API app (AMAZON.md §2.2):
/// `{Seller or Vendor Central}/apps/authorize/consent?application_id=…&state=…[&redirect_uri=…][&version=beta]`.
///
/// ```
/// use lwa::{AccountType, Endpoints, Region, SpApiConsent};
/// let url = SpApiConsent {
///     application_id: "amzn1.sp.solution.abc".into(),
///     state: "s1".into(),
///     redirect_uri: None,
///     draft: true,
///     account_type: AccountType::Seller,
///     region: Region::Eu,
///     marketplace: None,
/// }
/// .url(&Endpoints::amazon());
/// assert_eq!(
///     url,
///     "https://sellercentral-europe.amazon.com/apps/authorize/consent?application_id=amzn1.sp.solution.abc&state=s1&version=beta"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct SpApiConsent {
    /// The app's SP-API application id (`amzn1.sp.solution.…` or `amzn1.sellerapps.app.…`).
    pub application_id: String,
    /// The short-lived, single-use value Amazon echoes back.
    pub state: String,
    /// One of the app's registered redirect URIs; Amazon uses the first one when absent.
    pub redirect_uri: Option<String>,
    /// Draft apps need `version=beta` (without it Amazon answers MD1000).
    pub draft: bool,
    /// Seller Central or Vendor Central.
    pub account_type: AccountType,
    /// The region to authorize (authorizations are regional).
    pub region: Region,
    /// The marketplace whose Central host to use; the region's default host when `None`.
    pub marketplace: Option<&'static Marketplace>,
}

impl SpApiConsent {
    /// The Seller or Vendor Central host this consent goes to.
    pub fn host(&self) -> &'static str {
        let marketplace = self.marketplace.filter(|m| m.region == self.region);
        match (self.account_type, marketplace) {
            (AccountType::Seller, Some(m)) => m.seller_central_host,
            (AccountType::Seller, None) => self.region.default_seller_central_host(),
            (AccountType::Vendor, Some(m)) => m.vendor_central_host_or_default(),
            (AccountType::Vendor, None) => self.region.default_vendor_central_host(),
        }
    }

    /// The full consent URL.
    pub fn url(&self, endpoints: &Endpoints) -> String {
        let mut query = Query::default();
        query.push("application_id", &self.application_id);
        query.push("state", &self.state);
        if let Some(redirect_uri) = &self.redirect_uri {
            query.push("redirect_uri", redirect_uri);
        }
        if self.draft {
            query.push("version", "beta");
        }
        format!(
            "{}?{}",
            endpoints.url(self.host(), "/apps/authorize/consent"),
            query.0
        )
    }
}

/// The Ads consent scope for most uses (campaign management, DSP, AMC).
pub const ADS_SCOPE_CAMPAIGN_MANAGEMENT: &str = "advertising::campaign_management";

/// The consent URL of an Ads app (AMAZON.md §2.1):
/// `{region's consent host}/ap/oa?client_id=…&scope=…&response_type=code&redirect_uri=…&state=…`
/// with an optional PKCE S256 challenge.
///
/// ```
/// use lwa::{AdsConsent, Endpoints, Region};
/// let url = AdsConsent {
///     client_id: "amzn1.application-oa2-client.abc".into(),
///     scopes: vec!["advertising::campaign_management".into()],
///     redirect_uri: "https://app.example.com/cb".into(),
///     state: "s1".into(),
///     region: Region::Na,
///     code_challenge: None,
/// }
/// .url(&Endpoints::amazon());
/// assert_eq!(
///     url,
///     "https://www.amazon.com/ap/oa?client_id=amzn1.application-oa2-client.abc\
///      &scope=advertising%3A%3Acampaign_management&response_type=code\
///      &redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&state=s1"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct AdsConsent {
    /// The LWA client id.
    pub client_id: String,
    /// Scopes, joined with a space in the URL.
    pub scopes: Vec<String>,
    /// One of the security profile's Allowed Return URLs.
    pub redirect_uri: String,
    /// The value Amazon echoes back.
    pub state: String,
    /// Which region's consent page to use (codes work in every region).
    pub region: Region,
    /// The S256 challenge of a [`Pkce`] pair, if PKCE is used.
    pub code_challenge: Option<String>,
}

impl AdsConsent {
    /// The full consent URL.
    pub fn url(&self, endpoints: &Endpoints) -> String {
        let mut query = Query::default();
        query.push("client_id", &self.client_id);
        query.push("scope", &self.scopes.join(" "));
        query.push("response_type", "code");
        query.push("redirect_uri", &self.redirect_uri);
        query.push("state", &self.state);
        if let Some(challenge) = &self.code_challenge {
            query.push("code_challenge", challenge);
            query.push("code_challenge_method", "S256");
        }
        format!(
            "{}?{}",
            endpoints.url(self.region.ads_consent_host(), "/ap/oa"),
            query.0
        )
    }
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
///
/// ```
/// let pkce = lwa::Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
/// assert_eq!(pkce.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
/// ```
#[derive(Debug, Clone)]
pub struct Pkce {
    verifier: CodeVerifier,
    challenge: String,
}

impl Pkce {
    /// A fresh random verifier (43 characters, 256 bits).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_verifier(&URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The pair for a known verifier.
    pub fn from_verifier(verifier: &str) -> Self {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Self {
            verifier: CodeVerifier::new(verifier),
            challenge,
        }
    }

    /// The verifier, sent with the code exchange.
    pub fn verifier(&self) -> &CodeVerifier {
        &self.verifier
    }

    /// The S256 challenge, sent in the consent URL.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

/// A random state value: 128 bits, URL-safe.
pub fn random_state() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A query string in which every character but RFC 3986's unreserved ones is percent-encoded
/// (a space is `%20`, as Amazon's examples combine scopes).
#[derive(Default)]
struct Query(String);

impl Query {
    fn push(&mut self, name: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(name);
        self.0.push('=');
        percent_encode_into(value, &mut self.0);
    }
}

pub(crate) fn percent_encode_into(value: &str, out: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(region: Region, account_type: AccountType, marketplace: Option<&str>) -> SpApiConsent {
        SpApiConsent {
            application_id: "amzn1.sp.solution.0bf296b5".into(),
            state: "st&te=1".into(),
            redirect_uri: Some("https://broker.example.com/auth/redirect".into()),
            draft: false,
            account_type,
            region,
            marketplace: marketplace.map(|m| Marketplace::parse(m).unwrap()),
        }
    }

    #[test]
    fn sp_api_seller_and_vendor_urls_per_region_and_marketplace() {
        let amazon = Endpoints::amazon();
        let tail = "/apps/authorize/consent?application_id=amzn1.sp.solution.0bf296b5&state=st%26te%3D1&redirect_uri=https%3A%2F%2Fbroker.example.com%2Fauth%2Fredirect";
        let cases = [
            (
                Region::Na,
                AccountType::Seller,
                None,
                "https://sellercentral.amazon.com",
            ),
            (
                Region::Eu,
                AccountType::Seller,
                None,
                "https://sellercentral-europe.amazon.com",
            ),
            (
                Region::Fe,
                AccountType::Seller,
                None,
                "https://sellercentral.amazon.co.jp",
            ),
            (
                Region::Na,
                AccountType::Seller,
                Some("CA"),
                "https://sellercentral.amazon.ca",
            ),
            (
                Region::Na,
                AccountType::Seller,
                Some("A2Q3Y263D00KWC"),
                "https://sellercentral.amazon.com.br",
            ),
            (
                Region::Eu,
                AccountType::Seller,
                Some("A1PA6795UKMFR9"),
                "https://sellercentral-europe.amazon.com",
            ),
            (
                Region::Eu,
                AccountType::Seller,
                Some("NL"),
                "https://sellercentral.amazon.nl",
            ),
            (
                Region::Eu,
                AccountType::Seller,
                Some("IN"),
                "https://sellercentral.amazon.in",
            ),
            (
                Region::Fe,
                AccountType::Seller,
                Some("AU"),
                "https://sellercentral.amazon.com.au",
            ),
            (
                Region::Fe,
                AccountType::Seller,
                Some("SG"),
                "https://sellercentral.amazon.sg",
            ),
            (
                Region::Na,
                AccountType::Vendor,
                None,
                "https://vendorcentral.amazon.com",
            ),
            (
                Region::Eu,
                AccountType::Vendor,
                None,
                "https://vendorcentral.amazon.co.uk",
            ),
            (
                Region::Eu,
                AccountType::Vendor,
                Some("DE"),
                "https://vendorcentral.amazon.de",
            ),
            (
                Region::Eu,
                AccountType::Vendor,
                Some("AE"),
                "https://vendorcentral.amazon.me",
            ),
            (
                Region::Eu,
                AccountType::Vendor,
                Some("IE"),
                "https://vendorcentral.amazon.co.uk",
            ),
            (
                Region::Fe,
                AccountType::Vendor,
                Some("JP"),
                "https://vendorcentral.amazon.co.jp",
            ),
            (
                Region::Na,
                AccountType::Vendor,
                Some("MX"),
                "https://vendorcentral.amazon.com.mx",
            ),
            // A marketplace of another region does not move the consent out of the region.
            (
                Region::Na,
                AccountType::Seller,
                Some("DE"),
                "https://sellercentral.amazon.com",
            ),
        ];
        for (region, kind, marketplace, origin) in cases {
            assert_eq!(
                sp(region, kind, marketplace).url(&amazon),
                format!("{origin}{tail}")
            );
        }
    }

    #[test]
    fn sp_api_draft_adds_version_beta_and_redirect_is_optional() {
        let mut consent = sp(Region::Na, AccountType::Seller, None);
        consent.draft = true;
        consent.redirect_uri = None;
        consent.state = "abc".into();
        assert_eq!(
            consent.url(&Endpoints::amazon()),
            "https://sellercentral.amazon.com/apps/authorize/consent?application_id=amzn1.sp.solution.0bf296b5&state=abc&version=beta"
        );
        assert_eq!(
            consent.url(&Endpoints::rebased("http://127.0.0.1:9/")),
            "http://127.0.0.1:9/sellercentral.amazon.com/apps/authorize/consent?application_id=amzn1.sp.solution.0bf296b5&state=abc&version=beta"
        );
    }

    #[test]
    fn ads_urls_per_region_with_pkce_and_two_scopes() {
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let consent = |region| AdsConsent {
            client_id: "amzn1.application-oa2-client.x".into(),
            scopes: vec![
                "advertising::campaign_management".into(),
                "advertising::audiences".into(),
            ],
            redirect_uri: "http://localhost:8080/cb?x=1".into(),
            state: "s".into(),
            region,
            code_challenge: Some(pkce.challenge().to_owned()),
        };
        let tail = "/ap/oa?client_id=amzn1.application-oa2-client.x&scope=advertising%3A%3Acampaign_management%20advertising%3A%3Aaudiences&response_type=code&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fcb%3Fx%3D1&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";
        assert_eq!(
            consent(Region::Na).url(&Endpoints::amazon()),
            format!("https://www.amazon.com{tail}")
        );
        assert_eq!(
            consent(Region::Eu).url(&Endpoints::amazon()),
            format!("https://eu.account.amazon.com{tail}")
        );
        assert_eq!(
            consent(Region::Fe).url(&Endpoints::amazon()),
            format!("https://apac.account.amazon.com{tail}")
        );
    }

    #[test]
    fn generated_pkce_and_state_are_random_and_well_formed() {
        let (a, b) = (Pkce::generate(), Pkce::generate());
        assert_eq!(a.verifier().expose().len(), 43);
        assert_ne!(a.challenge(), b.challenge());
        assert_eq!(
            Pkce::from_verifier(a.verifier().expose()).challenge(),
            a.challenge()
        );
        assert_ne!(random_state(), random_state());
        assert_eq!(random_state().len(), 22);
    }
}
