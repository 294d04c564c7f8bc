//! The fixed principals every fake starts with. The binary prints them at start.

/// Client id of the default (published) SP-API app.
pub const SP_API_CLIENT_ID: &str = "amzn1.application-oa2-client.06cfef8f9728be048022f3954a4a5d0c";
/// Current client secret of the default SP-API app.
pub const SP_API_CLIENT_SECRET: &str =
    "amzn1.oa2-cs.v1.10fda26ba06b6b50c9c7a87618d1d89b3ace7fa1eee9d6f6d763e54d4c5222a5";
/// Previous (still valid) client secret of the default SP-API app.
pub const SP_API_PREVIOUS_CLIENT_SECRET: &str =
    "amzn1.oa2-cs.v1.2381067f2bfad071abefb607246996b978ae8dac3188991b6088e9aede79580f";
/// Application id of the default SP-API app (used in consent URLs).
pub const SP_API_APPLICATION_ID: &str = "amzn1.sp.solution.ff441020-f643-4aaa-9e62-4660e96215ef";

/// Client id of the default Ads app.
pub const ADS_CLIENT_ID: &str = "amzn1.application-oa2-client.59aba8a30a033366422a04cc6f283c97";
/// Current client secret of the default Ads app.
pub const ADS_CLIENT_SECRET: &str =
    "amzn1.oa2-cs.v1.61079dcee0a7c68872889ce4ebf75555eec5218cd2396ae5d87887367dfd19e7";
/// Previous (still valid) client secret of the default Ads app.
pub const ADS_PREVIOUS_CLIENT_SECRET: &str =
    "amzn1.oa2-cs.v1.0b94d54118c6dcebfc38828a861670738816a3e51464b2f634a3ac543c226c08";

/// Redirect URIs registered on both default apps (before `--redirect-uri` extras).
pub const DEFAULT_REDIRECT_URIS: &[&str] = &[
    "http://localhost:8080/auth/redirect",
    "http://127.0.0.1:8080/auth/redirect",
    "http://127.0.0.1:8765/callback",
];

/// Default NA seller (Seller Central, every NA marketplace).
pub const SELLER_NA: &str = "A1FAKESELLERNA";
/// Default EU seller.
pub const SELLER_EU: &str = "A1FAKESELLEREU";
/// Default FE seller.
pub const SELLER_FE: &str = "A1FAKESELLERFE";
/// Default NA vendor (Vendor Central).
pub const VENDOR_NA: &str = "A1FAKEVENDORNA";

/// Default advertiser, with one profile per region.
pub const ADVERTISER: &str = "ENTITY1FAKEADVERTISER";
/// The default advertiser's US profile.
pub const PROFILE_NA: i64 = 3_510_842_657_320_001;
/// The default advertiser's UK profile.
pub const PROFILE_EU: i64 = 3_510_842_657_320_002;
/// The default advertiser's JP profile.
pub const PROFILE_FE: i64 = 3_510_842_657_320_003;
/// The default advertiser's AMC instance.
pub const AMC_INSTANCE: &str = "amcfake7na01";
/// The AMC account id owning [`AMC_INSTANCE`] (the `Amazon-Advertising-API-AdvertiserId`).
pub const AMC_ADVERTISER_ID: &str = "ENTITY2FAKEAMC0001";
/// The marketplace of [`AMC_INSTANCE`].
pub const AMC_MARKETPLACE_ID: &str = "ATVPDKIKX0DER";

/// The default seller or vendor of a region and account type, for consent pages and the
/// control API.
pub fn default_selling_partner(region: crate::Region, account_type: crate::AccountType) -> &'static str {
    use crate::{AccountType, Region};
    match (account_type, region) {
        (AccountType::Vendor, _) => VENDOR_NA,
        (AccountType::Seller, Region::Na) => SELLER_NA,
        (AccountType::Seller, Region::Eu) => SELLER_EU,
        (AccountType::Seller, Region::Fe) => SELLER_FE,
    }
}
