//! A running fake plus an HTTP client that does not follow redirects, with one helper per
//! thing tests do often.

use fake_amazon::{
    AccountType, AuthorizeSpec, FakeAmazon, FakeConfig, FakeControl, Quirks, Region, defaults,
};
use reqwest::{Client, Response, StatusCode, redirect};
use serde_json::Value;

pub const NA_LWA: &str = "api.amazon.com";
pub const EU_LWA: &str = "api.amazon.co.uk";
pub const FE_LWA: &str = "api.amazon.co.jp";
pub const SP_NA: &str = "sellingpartnerapi-na.amazon.com";
pub const SP_EU: &str = "sellingpartnerapi-eu.amazon.com";
pub const ADS_NA: &str = "advertising-api.amazon.com";
pub const REDIRECT: &str = "http://localhost:8080/auth/redirect";

pub struct TestFake {
    pub fake: FakeAmazon,
    pub http: Client,
    pub control: FakeControl,
}

pub async fn spawn() -> TestFake {
    spawn_with(FakeConfig::default()).await
}

/// A fake with the default configuration but for `quirks`.
pub async fn spawn_with_quirks(quirks: Quirks) -> TestFake {
    spawn_with(FakeConfig {
        quirks,
        ..FakeConfig::default()
    })
    .await
}

pub async fn spawn_with(config: FakeConfig) -> TestFake {
    let fake = FakeAmazon::start(config).await.expect("fake starts");
    let http = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .expect("client");
    let control = fake.control();
    TestFake { fake, http, control }
}

/// Status and JSON body (Null when the body is not JSON).
pub async fn read(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub fn sp_creds() -> [(&'static str, &'static str); 2] {
    [
        ("client_id", defaults::SP_API_CLIENT_ID),
        ("client_secret", defaults::SP_API_CLIENT_SECRET),
    ]
}

pub fn ads_creds() -> [(&'static str, &'static str); 2] {
    [
        ("client_id", defaults::ADS_CLIENT_ID),
        ("client_secret", defaults::ADS_CLIENT_SECRET),
    ]
}

impl TestFake {
    pub fn url(&self, host: &str, path: &str) -> String {
        self.fake.url(host, path)
    }

    /// POSTs a form to the token endpoint of `host`.
    pub async fn token(&self, host: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(host, "/auth/o2/token"))
            .form(form)
            .send()
            .await
            .expect("token call");
        read(resp).await
    }

    /// The raw token endpoint response.
    pub async fn token_raw(&self, host: &str, form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url(host, "/auth/o2/token"))
            .form(form)
            .send()
            .await
            .expect("token call")
    }

    /// A code for the default SP-API app and a seller (default seller of `region` when None).
    pub async fn sp_code(&self, seller: Option<&str>, region: Region) -> String {
        self.control
            .authorize(AuthorizeSpec {
                client_id: defaults::SP_API_CLIENT_ID.to_owned(),
                selling_partner_id: seller.map(str::to_owned),
                region: Some(region),
                account_type: Some(AccountType::Seller),
                ..Default::default()
            })
            .await
    }

    /// Exchanges a code of the default SP-API app at api.amazon.com.
    pub async fn exchange_sp(&self, code: &str) -> (StatusCode, Value) {
        self.exchange_sp_with_redirect(code, None).await
    }

    /// Exchanges a code of the default SP-API app at api.amazon.com, naming `redirect_uri`
    /// when given.
    pub async fn exchange_sp_with_redirect(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> (StatusCode, Value) {
        let [id, secret] = sp_creds();
        let mut form = vec![("grant_type", "authorization_code"), ("code", code)];
        if let Some(redirect_uri) = redirect_uri {
            form.push(("redirect_uri", redirect_uri));
        }
        form.extend([id, secret]);
        self.token(NA_LWA, &form).await
    }

    /// Access and refresh tokens of the default seller of `region`.
    pub async fn seller_tokens(&self, region: Region) -> (String, String) {
        let code = self.sp_code(None, region).await;
        let (status, body) = self.exchange_sp(&code).await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// A grantless token of the default SP-API app.
    pub async fn grantless(&self, scope: &str) -> String {
        let [id, secret] = sp_creds();
        let (status, body) = self
            .token(
                NA_LWA,
                &[("grant_type", "client_credentials"), ("scope", scope), id, secret],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// Access and refresh tokens of the default advertiser for the default Ads app.
    pub async fn ads_tokens(&self) -> (String, String) {
        let code = self
            .control
            .authorize(AuthorizeSpec {
                client_id: defaults::ADS_CLIENT_ID.to_owned(),
                ..Default::default()
            })
            .await;
        let [id, secret] = ads_creds();
        let (status, body) = self
            .token(
                NA_LWA,
                &[("grant_type", "authorization_code"), ("code", &code), id, secret],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["refresh_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Refreshes with the default SP-API app.
    pub async fn refresh_sp(&self, refresh_token: &str) -> (StatusCode, Value) {
        let [id, secret] = sp_creds();
        self.token(
            NA_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                id,
                secret,
            ],
        )
        .await
    }

    /// GET on an SP-API host with an optional `x-amz-access-token`.
    pub async fn sp_get(&self, host: &str, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(host, path));
        if let Some(t) = token {
            req = req.header("x-amz-access-token", t);
        }
        req.send().await.expect("sp-api call")
    }

    /// POST JSON on an SP-API host.
    pub async fn sp_post(&self, host: &str, path: &str, token: &str, body: &Value) -> Response {
        self.http
            .post(self.url(host, path))
            .header("x-amz-access-token", token)
            .json(body)
            .send()
            .await
            .expect("sp-api call")
    }

    /// GET on an Ads host with bearer token and client id.
    pub async fn ads_get(&self, host: &str, path: &str, token: &str, client_id: &str) -> Response {
        self.http
            .get(self.url(host, path))
            .bearer_auth(token)
            .header("Amazon-Advertising-API-ClientId", client_id)
            .send()
            .await
            .expect("ads call")
    }
}

/// The query parameters of a redirect's Location.
pub fn location_params(resp: &Response) -> (String, Vec<(String, String)>) {
    let location = resp
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_owned();
    let url = url::Url::parse(&location).expect("absolute location");
    let pairs = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (location, pairs)
}

pub fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Asserts the LWA error shape and returns the body.
pub fn assert_lwa_error(status: StatusCode, body: &Value, want_status: u16, want_error: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"], want_error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(body["error_index"].is_string(), "{body}");
    assert_eq!(body["request_id"].as_str().map(str::len), Some(36), "{body}");
}
