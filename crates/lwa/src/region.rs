//! Amazon's three regions, their marketplaces, and every host a region implies.
//!
//! Facts from `shared/AMAZON.md` §1.1, §2.1, §2.3, §3.1, §3.2 and §4.1.

use std::fmt;
use std::str::FromStr;

/// One of Amazon's three selling regions.
///
/// ```
/// use lwa::Region;
/// assert_eq!("eu-west-1".parse::<Region>().unwrap(), Region::Eu);
/// assert_eq!("A1VC38T7YXB528".parse::<Region>().unwrap(), Region::Fe); // Japan
/// assert_eq!(Region::Na.sp_api_host(), "sellingpartnerapi-na.amazon.com");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// North America: US, CA, MX, BR.
    Na,
    /// Europe, the Middle East, Africa and India.
    Eu,
    /// Far East: JP, AU, SG.
    Fe,
}

/// The error for a region, marketplace or country that Amazon does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown region {0:?}: expected na, eu, fe, us-east-1, eu-west-1, us-west-2, a marketplace id or a country code"
)]
pub struct UnknownRegion(pub String);

/// The error for a marketplace id or country code that Amazon does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown marketplace {0:?}: expected a marketplace id such as ATVPDKIKX0DER or a country code such as US"
)]
pub struct UnknownMarketplace(pub String);

impl Region {
    /// All regions, in a fixed order.
    pub const ALL: [Region; 3] = [Region::Na, Region::Eu, Region::Fe];

    /// Parses `na`/`eu`/`fe`, the legacy AWS regions `us-east-1`/`eu-west-1`/`us-west-2`,
    /// any marketplace id, or a marketplace's country code (case-insensitive).
    pub fn parse(input: &str) -> Result<Region, UnknownRegion> {
        let trimmed = input.trim();
        match trimmed.to_ascii_lowercase().as_str() {
            "na" | "us-east-1" => return Ok(Region::Na),
            "eu" | "eu-west-1" => return Ok(Region::Eu),
            "fe" | "us-west-2" => return Ok(Region::Fe),
            _ => {}
        }
        Marketplace::parse(trimmed)
            .map(|m| m.region)
            .map_err(|_| UnknownRegion(input.to_owned()))
    }

    /// The short lowercase name: `na`, `eu` or `fe`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Na => "na",
            Region::Eu => "eu",
            Region::Fe => "fe",
        }
    }

    /// The AWS region the SP-API once used for signing (`us-east-1`, `eu-west-1`, `us-west-2`).
    pub fn aws_region(self) -> &'static str {
        match self {
            Region::Na => "us-east-1",
            Region::Eu => "eu-west-1",
            Region::Fe => "us-west-2",
        }
    }

    /// The LWA token host for SP-API apps: always `api.amazon.com` (AMAZON.md §1.1).
    pub fn sp_api_token_host(self) -> &'static str {
        "api.amazon.com"
    }

    /// The LWA token host for Ads apps in this region (`api.amazon.com`, `api.amazon.co.uk`,
    /// `api.amazon.co.jp`).
    pub fn ads_token_host(self) -> &'static str {
        match self {
            Region::Na => "api.amazon.com",
            Region::Eu => "api.amazon.co.uk",
            Region::Fe => "api.amazon.co.jp",
        }
    }

    /// The LWA token host for an app of the given kind in this region.
    pub fn token_host(self, api: Api) -> &'static str {
        match api {
            Api::SpApi => self.sp_api_token_host(),
            Api::Ads => self.ads_token_host(),
        }
    }

    /// The SP-API production host, e.g. `sellingpartnerapi-eu.amazon.com`.
    pub fn sp_api_host(self) -> &'static str {
        match self {
            Region::Na => "sellingpartnerapi-na.amazon.com",
            Region::Eu => "sellingpartnerapi-eu.amazon.com",
            Region::Fe => "sellingpartnerapi-fe.amazon.com",
        }
    }

    /// The SP-API sandbox host, e.g. `sandbox.sellingpartnerapi-na.amazon.com`.
    pub fn sp_api_sandbox_host(self) -> &'static str {
        match self {
            Region::Na => "sandbox.sellingpartnerapi-na.amazon.com",
            Region::Eu => "sandbox.sellingpartnerapi-eu.amazon.com",
            Region::Fe => "sandbox.sellingpartnerapi-fe.amazon.com",
        }
    }

    /// The Ads API host, e.g. `advertising-api-eu.amazon.com`. AMC is served there too.
    pub fn ads_api_host(self) -> &'static str {
        match self {
            Region::Na => "advertising-api.amazon.com",
            Region::Eu => "advertising-api-eu.amazon.com",
            Region::Fe => "advertising-api-fe.amazon.com",
        }
    }

    /// The host of the Ads consent page (`/ap/oa`).
    pub fn ads_consent_host(self) -> &'static str {
        match self {
            Region::Na => "www.amazon.com",
            Region::Eu => "eu.account.amazon.com",
            Region::Fe => "apac.account.amazon.com",
        }
    }

    /// The Seller Central host used when no marketplace is given.
    pub fn default_seller_central_host(self) -> &'static str {
        match self {
            Region::Na => "sellercentral.amazon.com",
            Region::Eu => "sellercentral-europe.amazon.com",
            Region::Fe => "sellercentral.amazon.co.jp",
        }
    }

    /// The Vendor Central host used when no marketplace is given.
    pub fn default_vendor_central_host(self) -> &'static str {
        match self {
            Region::Na => "vendorcentral.amazon.com",
            Region::Eu => "vendorcentral.amazon.co.uk",
            Region::Fe => "vendorcentral.amazon.co.jp",
        }
    }

    /// The marketplaces of this region.
    pub fn marketplaces(self) -> impl Iterator<Item = &'static Marketplace> {
        MARKETPLACES.iter().filter(move |m| m.region == self)
    }

    /// The region whose SP-API, Ads, consent or token host this is, if any. Token hosts map to
    /// the Ads region that uses them (`api.amazon.com` is NA).
    pub fn of_host(host: &str) -> Option<Region> {
        let host = host.to_ascii_lowercase();
        for region in Region::ALL {
            if host == region.sp_api_host()
                || host == region.sp_api_sandbox_host()
                || host == region.ads_api_host()
                || host == region.ads_consent_host()
                || host == region.ads_token_host()
                || host == region.default_seller_central_host()
                || host == region.default_vendor_central_host()
            {
                return Some(region);
            }
        }
        MARKETPLACES
            .iter()
            .find(|m| m.seller_central_host == host || m.vendor_central_host == Some(host.as_str()))
            .map(|m| m.region)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Region {
    type Err = UnknownRegion;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::parse(s)
    }
}

/// Which Amazon API an app, a connection or a consent belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    /// The Selling Partner API (sellers and vendors).
    SpApi,
    /// The Amazon Ads API, including Amazon Marketing Cloud.
    Ads,
}

impl Api {
    /// `sp-api` or `ads`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::SpApi => "sp-api",
            Api::Ads => "ads",
        }
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for an API name other than `sp-api` or `ads`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown api {0:?}: expected sp-api or ads")]
pub struct UnknownApi(pub String);

impl FromStr for Api {
    type Err = UnknownApi;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sp-api" | "spapi" | "sp_api" | "sp" => Ok(Api::SpApi),
            "ads" | "amazon-ads" | "advertising" => Ok(Api::Ads),
            _ => Err(UnknownApi(s.to_owned())),
        }
    }
}

/// An Amazon marketplace with the hosts its sellers and vendors sign in to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marketplace {
    /// The marketplace id, e.g. `ATVPDKIKX0DER`.
    pub id: &'static str,
    /// The country code Amazon uses for it (`UK`, not `GB`).
    pub country_code: &'static str,
    /// The region it belongs to.
    pub region: Region,
    /// The Seller Central host for consent (AMAZON.md §2.3).
    pub seller_central_host: &'static str,
    /// The Vendor Central host, where Amazon lists one.
    pub vendor_central_host: Option<&'static str>,
}

impl Marketplace {
    /// Finds a marketplace by id (`A1PA6795UKMFR9`) or country code (`DE`; `GB` means `UK`).
    ///
    /// ```
    /// let de = lwa::Marketplace::parse("de").unwrap();
    /// assert_eq!(de.id, "A1PA6795UKMFR9");
    /// assert_eq!(de.seller_central_host, "sellercentral-europe.amazon.com");
    /// ```
    pub fn parse(input: &str) -> Result<&'static Marketplace, UnknownMarketplace> {
        let wanted = input.trim().to_ascii_uppercase();
        let wanted = if wanted == "GB" { "UK".to_owned() } else { wanted };
        MARKETPLACES
            .iter()
            .find(|m| m.id == wanted || m.country_code == wanted)
            .ok_or_else(|| UnknownMarketplace(input.to_owned()))
    }

    /// The Vendor Central host, or the region's default where Amazon lists none.
    pub fn vendor_central_host_or_default(&self) -> &'static str {
        self.vendor_central_host
            .unwrap_or_else(|| self.region.default_vendor_central_host())
    }

    /// Every marketplace Amazon lists (AMAZON.md §3.2).
    pub fn all() -> &'static [Marketplace] {
        MARKETPLACES
    }
}

macro_rules! marketplace {
    ($id:literal, $cc:literal, $region:ident, $sc:literal, $vc:expr) => {
        Marketplace {
            id: $id,
            country_code: $cc,
            region: Region::$region,
            seller_central_host: $sc,
            vendor_central_host: $vc,
        }
    };
}

static MARKETPLACES: &[Marketplace] = &[
    marketplace!(
        "A2EUQ1WTGCTBG2",
        "CA",
        Na,
        "sellercentral.amazon.ca",
        Some("vendorcentral.amazon.ca")
    ),
    marketplace!(
        "ATVPDKIKX0DER",
        "US",
        Na,
        "sellercentral.amazon.com",
        Some("vendorcentral.amazon.com")
    ),
    marketplace!(
        "A1AM78C64UM0Y8",
        "MX",
        Na,
        "sellercentral.amazon.com.mx",
        Some("vendorcentral.amazon.com.mx")
    ),
    marketplace!(
        "A2Q3Y263D00KWC",
        "BR",
        Na,
        "sellercentral.amazon.com.br",
        Some("vendorcentral.amazon.com.br")
    ),
    marketplace!("A28R8C7NBKEWEA", "IE", Eu, "sellercentral.amazon.ie", None),
    marketplace!(
        "A1RKKUPIHCS9HS",
        "ES",
        Eu,
        "sellercentral-europe.amazon.com",
        Some("vendorcentral.amazon.es")
    ),
    marketplace!(
        "A1F83G8C2ARO7P",
        "UK",
        Eu,
        "sellercentral-europe.amazon.com",
        Some("vendorcentral.amazon.co.uk")
    ),
    marketplace!(
        "A13V1IB3VIYZZH",
        "FR",
        Eu,
        "sellercentral-europe.amazon.com",
        Some("vendorcentral.amazon.fr")
    ),
    marketplace!("AMEN7PMS3EDWL", "BE", Eu, "sellercentral.amazon.com.be", None),
    marketplace!(
        "A1805IZSGTT6HS",
        "NL",
        Eu,
        "sellercentral.amazon.nl",
        Some("vendorcentral.amazon.nl")
    ),
    marketplace!(
        "A1PA6795UKMFR9",
        "DE",
        Eu,
        "sellercentral-europe.amazon.com",
        Some("vendorcentral.amazon.de")
    ),
    marketplace!(
        "APJ6JRA9NG5V4",
        "IT",
        Eu,
        "sellercentral-europe.amazon.com",
        Some("vendorcentral.amazon.it")
    ),
    marketplace!(
        "A2NODRKZP88ZB9",
        "SE",
        Eu,
        "sellercentral.amazon.se",
        Some("vendorcentral.amazon.se")
    ),
    marketplace!("AE08WJ6YKNBMC", "ZA", Eu, "sellercentral.amazon.co.za", None),
    marketplace!(
        "A1C3SOZRARQ6R3",
        "PL",
        Eu,
        "sellercentral.amazon.pl",
        Some("vendorcentral.amazon.pl")
    ),
    marketplace!(
        "ARBP9OOSHTCHU",
        "EG",
        Eu,
        "sellercentral.amazon.eg",
        Some("vendorcentral.amazon.me")
    ),
    marketplace!(
        "A33AVAJ2PDY3EV",
        "TR",
        Eu,
        "sellercentral.amazon.com.tr",
        Some("vendorcentral.amazon.com.tr")
    ),
    marketplace!("A17E79C6D8DWNP", "SA", Eu, "sellercentral.amazon.sa", None),
    marketplace!(
        "A2VIGQ35RCS4UG",
        "AE",
        Eu,
        "sellercentral.amazon.ae",
        Some("vendorcentral.amazon.me")
    ),
    marketplace!(
        "A21TJRUUN4KGV",
        "IN",
        Eu,
        "sellercentral.amazon.in",
        Some("vendorcentral.amazon.in")
    ),
    marketplace!(
        "A19VAU5U5O7RUS",
        "SG",
        Fe,
        "sellercentral.amazon.sg",
        Some("vendorcentral.amazon.com.sg")
    ),
    marketplace!(
        "A39IBJ37TRP1C6",
        "AU",
        Fe,
        "sellercentral.amazon.com.au",
        Some("vendorcentral.amazon.com.au")
    ),
    marketplace!(
        "A1VC38T7YXB528",
        "JP",
        Fe,
        "sellercentral.amazon.co.jp",
        Some("vendorcentral.amazon.co.jp")
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_aliases_and_every_marketplace() {
        assert_eq!(Region::parse("NA").unwrap(), Region::Na);
        assert_eq!(Region::parse("us-east-1").unwrap(), Region::Na);
        assert_eq!(Region::parse("eu-west-1").unwrap(), Region::Eu);
        assert_eq!(Region::parse("us-west-2").unwrap(), Region::Fe);
        let expected = [
            ("A2EUQ1WTGCTBG2", Region::Na),
            ("ATVPDKIKX0DER", Region::Na),
            ("A1AM78C64UM0Y8", Region::Na),
            ("A2Q3Y263D00KWC", Region::Na),
            ("A28R8C7NBKEWEA", Region::Eu),
            ("A1RKKUPIHCS9HS", Region::Eu),
            ("A1F83G8C2ARO7P", Region::Eu),
            ("A13V1IB3VIYZZH", Region::Eu),
            ("AMEN7PMS3EDWL", Region::Eu),
            ("A1805IZSGTT6HS", Region::Eu),
            ("A1PA6795UKMFR9", Region::Eu),
            ("APJ6JRA9NG5V4", Region::Eu),
            ("A2NODRKZP88ZB9", Region::Eu),
            ("AE08WJ6YKNBMC", Region::Eu),
            ("A1C3SOZRARQ6R3", Region::Eu),
            ("ARBP9OOSHTCHU", Region::Eu),
            ("A33AVAJ2PDY3EV", Region::Eu),
            ("A17E79C6D8DWNP", Region::Eu),
            ("A2VIGQ35RCS4UG", Region::Eu),
            ("A21TJRUUN4KGV", Region::Eu),
            ("A19VAU5U5O7RUS", Region::Fe),
            ("A39IBJ37TRP1C6", Region::Fe),
            ("A1VC38T7YXB528", Region::Fe),
        ];
        assert_eq!(expected.len(), Marketplace::all().len());
        for (id, region) in expected {
            assert_eq!(Region::parse(id).unwrap(), region, "{id}");
        }
        assert_eq!(Region::parse("gb").unwrap(), Region::Eu);
        assert!(Region::parse("us-west-1").is_err());
        assert!(Region::parse("").is_err());
    }

    #[test]
    fn hosts_per_region() {
        assert_eq!(Region::Eu.sp_api_token_host(), "api.amazon.com");
        assert_eq!(Region::Eu.ads_token_host(), "api.amazon.co.uk");
        assert_eq!(Region::Fe.ads_token_host(), "api.amazon.co.jp");
        assert_eq!(
            Region::Fe.sp_api_sandbox_host(),
            "sandbox.sellingpartnerapi-fe.amazon.com"
        );
        assert_eq!(Region::Eu.ads_api_host(), "advertising-api-eu.amazon.com");
        assert_eq!(Region::Fe.ads_consent_host(), "apac.account.amazon.com");
        assert_eq!(
            Marketplace::parse("NL").unwrap().seller_central_host,
            "sellercentral.amazon.nl"
        );
        assert_eq!(
            Marketplace::parse("ARBP9OOSHTCHU").unwrap().vendor_central_host,
            Some("vendorcentral.amazon.me")
        );
        assert_eq!(
            Marketplace::parse("IE").unwrap().vendor_central_host_or_default(),
            "vendorcentral.amazon.co.uk"
        );
        assert_eq!(Region::of_host("sellercentral.amazon.com.au"), Some(Region::Fe));
        assert_eq!(Region::of_host("vendorcentral.amazon.de"), Some(Region::Eu));
        assert_eq!(Region::of_host("advertising-api.amazon.com"), Some(Region::Na));
        assert_eq!(Region::of_host("example.com"), None);
    }
}
