//! The fake's own tables of Amazon hosts and marketplaces (AMAZON.md §1.1, §2, §3.1, §3.2, §4.1).
//!
//! **Invariant:** these tables are written from AMAZON.md, never taken from the `lwa` crate, so
//! a mistake there shows up as a refusal here.

use crate::model::{AccountType, Region};

/// What an Amazon host is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// An LWA token host (`/auth/o2/token`).
    Lwa(Region),
    /// A Seller Central or Vendor Central host (`/apps/authorize/consent`).
    Central {
        /// Region of the host.
        region: Region,
        /// Seller or Vendor Central.
        account_type: AccountType,
        /// The host's marketplace, when it serves only one.
        marketplace: Option<&'static str>,
        /// Known only from third-party lists (served unless the quirk says otherwise).
        unconfirmed: bool,
    },
    /// An Ads consent host (`/ap/oa`).
    AdsConsent(Region),
    /// A Selling Partner API host.
    SpApi(Region),
    /// A Selling Partner API sandbox host.
    SpApiSandbox(Region),
    /// An Ads API host.
    Ads(Region),
}

const fn central(region: Region, account_type: AccountType, marketplace: Option<&'static str>) -> HostKind {
    HostKind::Central {
        region,
        account_type,
        marketplace,
        unconfirmed: false,
    }
}

const fn newer_central(region: Region, marketplace: &'static str) -> HostKind {
    HostKind::Central {
        region,
        account_type: AccountType::Seller,
        marketplace: Some(marketplace),
        unconfirmed: true,
    }
}

use AccountType::{Seller as S, Vendor as V};
use Region::{Eu, Fe, Na};

/// Every host the fake serves.
#[rustfmt::skip]
pub const HOSTS: &[(&str, HostKind)] = &[
    ("api.amazon.com", HostKind::Lwa(Na)),
    ("api.amazon.co.uk", HostKind::Lwa(Eu)),
    ("api.amazon.co.jp", HostKind::Lwa(Fe)),
    // Seller Central (DG2021).
    ("sellercentral.amazon.ca", central(Na, S, Some("A2EUQ1WTGCTBG2"))),
    ("sellercentral.amazon.com", central(Na, S, Some("ATVPDKIKX0DER"))),
    ("sellercentral.amazon.com.mx", central(Na, S, Some("A1AM78C64UM0Y8"))),
    ("sellercentral.amazon.com.br", central(Na, S, Some("A2Q3Y263D00KWC"))),
    ("sellercentral-europe.amazon.com", central(Eu, S, None)),
    ("sellercentral.amazon.nl", central(Eu, S, Some("A1805IZSGTT6HS"))),
    ("sellercentral.amazon.se", central(Eu, S, Some("A2NODRKZP88ZB9"))),
    ("sellercentral.amazon.pl", central(Eu, S, Some("A1C3SOZRARQ6R3"))),
    ("sellercentral.amazon.com.tr", central(Eu, S, Some("A33AVAJ2PDY3EV"))),
    ("sellercentral.amazon.ae", central(Eu, S, Some("A2VIGQ35RCS4UG"))),
    ("sellercentral.amazon.in", central(Eu, S, Some("A21TJRUUN4KGV"))),
    ("sellercentral.amazon.sg", central(Fe, S, Some("A19VAU5U5O7RUS"))),
    ("sellercentral.amazon.com.au", central(Fe, S, Some("A39IBJ37TRP1C6"))),
    ("sellercentral.amazon.co.jp", central(Fe, S, Some("A1VC38T7YXB528"))),
    // Newer Seller Central hosts, from third-party lists only (UNCONFIRMED, AMAZON.md §2.3).
    ("sellercentral.amazon.ie", newer_central(Eu, "A28R8C7NBKEWEA")),
    ("sellercentral.amazon.com.be", newer_central(Eu, "AMEN7PMS3EDWL")),
    ("sellercentral.amazon.co.za", newer_central(Eu, "AE08WJ6YKNBMC")),
    ("sellercentral.amazon.sa", newer_central(Eu, "A17E79C6D8DWNP")),
    ("sellercentral.amazon.eg", newer_central(Eu, "ARBP9OOSHTCHU")),
    // Vendor Central (DG2021).
    ("vendorcentral.amazon.ca", central(Na, V, Some("A2EUQ1WTGCTBG2"))),
    ("vendorcentral.amazon.com", central(Na, V, Some("ATVPDKIKX0DER"))),
    ("vendorcentral.amazon.com.mx", central(Na, V, Some("A1AM78C64UM0Y8"))),
    ("vendorcentral.amazon.com.br", central(Na, V, Some("A2Q3Y263D00KWC"))),
    ("vendorcentral.amazon.es", central(Eu, V, Some("A1RKKUPIHCS9HS"))),
    ("vendorcentral.amazon.co.uk", central(Eu, V, Some("A1F83G8C2ARO7P"))),
    ("vendorcentral.amazon.fr", central(Eu, V, Some("A13V1IB3VIYZZH"))),
    ("vendorcentral.amazon.nl", central(Eu, V, Some("A1805IZSGTT6HS"))),
    ("vendorcentral.amazon.de", central(Eu, V, Some("A1PA6795UKMFR9"))),
    ("vendorcentral.amazon.it", central(Eu, V, Some("APJ6JRA9NG5V4"))),
    ("vendorcentral.amazon.se", central(Eu, V, Some("A2NODRKZP88ZB9"))),
    ("vendorcentral.amazon.pl", central(Eu, V, Some("A1C3SOZRARQ6R3"))),
    ("vendorcentral.amazon.me", central(Eu, V, None)),
    ("vendorcentral.amazon.com.tr", central(Eu, V, Some("A33AVAJ2PDY3EV"))),
    ("vendorcentral.amazon.in", central(Eu, V, Some("A21TJRUUN4KGV"))),
    ("vendorcentral.amazon.com.sg", central(Fe, V, Some("A19VAU5U5O7RUS"))),
    ("vendorcentral.amazon.com.au", central(Fe, V, Some("A39IBJ37TRP1C6"))),
    ("vendorcentral.amazon.co.jp", central(Fe, V, Some("A1VC38T7YXB528"))),
    // Ads consent.
    ("www.amazon.com", HostKind::AdsConsent(Na)),
    ("eu.account.amazon.com", HostKind::AdsConsent(Eu)),
    ("apac.account.amazon.com", HostKind::AdsConsent(Fe)),
    // SP-API.
    ("sellingpartnerapi-na.amazon.com", HostKind::SpApi(Na)),
    ("sellingpartnerapi-eu.amazon.com", HostKind::SpApi(Eu)),
    ("sellingpartnerapi-fe.amazon.com", HostKind::SpApi(Fe)),
    ("sandbox.sellingpartnerapi-na.amazon.com", HostKind::SpApiSandbox(Na)),
    ("sandbox.sellingpartnerapi-eu.amazon.com", HostKind::SpApiSandbox(Eu)),
    ("sandbox.sellingpartnerapi-fe.amazon.com", HostKind::SpApiSandbox(Fe)),
    // Ads.
    ("advertising-api.amazon.com", HostKind::Ads(Na)),
    ("advertising-api-eu.amazon.com", HostKind::Ads(Eu)),
    ("advertising-api-fe.amazon.com", HostKind::Ads(Fe)),
];

/// What `host` is, if the fake serves it. `newer_seller_central` says whether the hosts known
/// only from third-party lists are served.
pub fn lookup(host: &str, newer_seller_central: bool) -> Option<HostKind> {
    let host = host.to_ascii_lowercase();
    let kind = HOSTS
        .iter()
        .find(|(name, _)| *name == host)
        .map(|(_, kind)| *kind)?;
    match kind {
        HostKind::Central {
            unconfirmed: true, ..
        } if !newer_seller_central => None,
        _ => Some(kind),
    }
}

/// The default Seller Central (or Vendor Central) host of a region: where the fake's Appstore
/// sends `amazon_callback_uri`. AMAZON.md names no default; these are the region's main store.
pub fn default_central_host(region: Region, account_type: AccountType) -> &'static str {
    match (account_type, region) {
        (AccountType::Seller, Na) => "sellercentral.amazon.com",
        (AccountType::Seller, Eu) => "sellercentral-europe.amazon.com",
        (AccountType::Seller, Fe) => "sellercentral.amazon.co.jp",
        (AccountType::Vendor, Na) => "vendorcentral.amazon.com",
        (AccountType::Vendor, Eu) => "vendorcentral.amazon.co.uk",
        (AccountType::Vendor, Fe) => "vendorcentral.amazon.co.jp",
    }
}

/// The canonical LWA token host of a region.
pub fn lwa_host(region: Region) -> &'static str {
    match region {
        Na => "api.amazon.com",
        Eu => "api.amazon.co.uk",
        Fe => "api.amazon.co.jp",
    }
}

/// A marketplace (AMAZON.md §3.2), with what the Sellers API and Ads profiles show of it.
#[derive(Debug, Clone, Copy)]
pub struct Marketplace {
    /// Marketplace id.
    pub id: &'static str,
    /// Country code as the Sellers API writes it (`GB` for the UK).
    pub country_code: &'static str,
    /// Country code as the Ads API writes it (`UK` for the UK).
    pub ads_country_code: &'static str,
    /// Region.
    pub region: Region,
    /// Name shown by the Sellers API.
    pub name: &'static str,
    /// Default currency.
    pub currency: &'static str,
    /// Default language.
    pub language: &'static str,
    /// Retail domain.
    pub domain: &'static str,
    /// Time zone of Ads profiles in it.
    pub timezone: &'static str,
}

#[allow(clippy::too_many_arguments)]
const fn mk(
    id: &'static str,
    country_code: &'static str,
    ads_country_code: &'static str,
    region: Region,
    name: &'static str,
    currency: &'static str,
    language: &'static str,
    domain: &'static str,
    timezone: &'static str,
) -> Marketplace {
    Marketplace {
        id,
        country_code,
        ads_country_code,
        region,
        name,
        currency,
        language,
        domain,
        timezone,
    }
}

/// Every marketplace, by region.
#[rustfmt::skip]
pub const MARKETPLACES: &[Marketplace] = &[
    mk("A2EUQ1WTGCTBG2", "CA", "CA", Na, "Amazon.ca", "CAD", "en_CA", "www.amazon.ca", "America/Los_Angeles"),
    mk("ATVPDKIKX0DER", "US", "US", Na, "Amazon.com", "USD", "en_US", "www.amazon.com", "America/Los_Angeles"),
    mk("A1AM78C64UM0Y8", "MX", "MX", Na, "Amazon.com.mx", "MXN", "es_MX", "www.amazon.com.mx", "America/Los_Angeles"),
    mk("A2Q3Y263D00KWC", "BR", "BR", Na, "Amazon.com.br", "BRL", "pt_BR", "www.amazon.com.br", "America/Sao_Paulo"),
    mk("A28R8C7NBKEWEA", "IE", "IE", Eu, "Amazon.ie", "EUR", "en_IE", "www.amazon.ie", "Europe/Dublin"),
    mk("A1RKKUPIHCS9HS", "ES", "ES", Eu, "Amazon.es", "EUR", "es_ES", "www.amazon.es", "Europe/Paris"),
    mk("A1F83G8C2ARO7P", "GB", "UK", Eu, "Amazon.co.uk", "GBP", "en_GB", "www.amazon.co.uk", "Europe/London"),
    mk("A13V1IB3VIYZZH", "FR", "FR", Eu, "Amazon.fr", "EUR", "fr_FR", "www.amazon.fr", "Europe/Paris"),
    mk("AMEN7PMS3EDWL", "BE", "BE", Eu, "Amazon.com.be", "EUR", "fr_BE", "www.amazon.com.be", "Europe/Brussels"),
    mk("A1805IZSGTT6HS", "NL", "NL", Eu, "Amazon.nl", "EUR", "nl_NL", "www.amazon.nl", "Europe/Amsterdam"),
    mk("A1PA6795UKMFR9", "DE", "DE", Eu, "Amazon.de", "EUR", "de_DE", "www.amazon.de", "Europe/Berlin"),
    mk("APJ6JRA9NG5V4", "IT", "IT", Eu, "Amazon.it", "EUR", "it_IT", "www.amazon.it", "Europe/Rome"),
    mk("A2NODRKZP88ZB9", "SE", "SE", Eu, "Amazon.se", "SEK", "sv_SE", "www.amazon.se", "Europe/Stockholm"),
    mk("AE08WJ6YKNBMC", "ZA", "ZA", Eu, "Amazon.co.za", "ZAR", "en_ZA", "www.amazon.co.za", "Africa/Johannesburg"),
    mk("A1C3SOZRARQ6R3", "PL", "PL", Eu, "Amazon.pl", "PLN", "pl_PL", "www.amazon.pl", "Europe/Warsaw"),
    mk("ARBP9OOSHTCHU", "EG", "EG", Eu, "Amazon.eg", "EGP", "ar_EG", "www.amazon.eg", "Africa/Cairo"),
    mk("A33AVAJ2PDY3EV", "TR", "TR", Eu, "Amazon.com.tr", "TRY", "tr_TR", "www.amazon.com.tr", "Europe/Istanbul"),
    mk("A17E79C6D8DWNP", "SA", "SA", Eu, "Amazon.sa", "SAR", "ar_SA", "www.amazon.sa", "Asia/Riyadh"),
    mk("A2VIGQ35RCS4UG", "AE", "AE", Eu, "Amazon.ae", "AED", "ar_AE", "www.amazon.ae", "Asia/Dubai"),
    mk("A21TJRUUN4KGV", "IN", "IN", Eu, "Amazon.in", "INR", "en_IN", "www.amazon.in", "Asia/Kolkata"),
    mk("A19VAU5U5O7RUS", "SG", "SG", Fe, "Amazon.sg", "SGD", "en_SG", "www.amazon.sg", "Asia/Singapore"),
    mk("A39IBJ37TRP1C6", "AU", "AU", Fe, "Amazon.com.au", "AUD", "en_AU", "www.amazon.com.au", "Australia/Sydney"),
    mk("A1VC38T7YXB528", "JP", "JP", Fe, "Amazon.co.jp", "JPY", "ja_JP", "www.amazon.co.jp", "Asia/Tokyo"),
];

/// The marketplace with this id.
pub fn marketplace(id: &str) -> Option<&'static Marketplace> {
    MARKETPLACES.iter().find(|m| m.id == id)
}

/// The marketplace with this country code (either the Sellers API's or the Ads API's).
pub fn marketplace_by_country(code: &str) -> Option<&'static Marketplace> {
    let code = code.to_ascii_uppercase();
    MARKETPLACES
        .iter()
        .find(|m| m.ads_country_code == code || m.country_code == code)
}

/// The marketplaces of a region.
pub fn marketplaces_of(region: Region) -> impl Iterator<Item = &'static Marketplace> {
    MARKETPLACES.iter().filter(move |m| m.region == region)
}
