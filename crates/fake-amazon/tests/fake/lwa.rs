//! The LWA token endpoint.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fake_amazon::{AppKind, AppSpec, AuthorizeSpec, FakeConfig, Quirks, Region, RevokeSpec, defaults};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::*;

fn is_amazon_token(token: &str, prefix: &str) -> bool {
    token.starts_with(prefix)
        && token.len() >= prefix.len() + 390
        && token[prefix.len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[tokio::test(flavor = "multi_thread")]
async fn code_exchange_returns_amazons_shape_and_headers() {
    let t = spawn().await;
    let code = t.sp_code(None, Region::Na).await;
    let [id, secret] = sp_creds();
    let resp = t
        .token_raw(
            NA_LWA,
            &[("grant_type", "authorization_code"), ("code", &code), id, secret],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "application/json;charset=UTF-8");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["pragma"], "no-cache");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], json!(3600));
    assert!(is_amazon_token(body["access_token"].as_str().unwrap(), "Atza|"));
    assert!(is_amazon_token(body["refresh_token"].as_str().unwrap(), "Atzr|"));
    assert!(body.get("scope").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_returns_the_same_refresh_token_by_default() {
    let t = spawn().await;
    let (access, refresh) = t.seller_tokens(Region::Na).await;
    let (status, body) = t.refresh_sp(&refresh).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refresh_token"], refresh.as_str());
    assert_ne!(body["access_token"], access.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_quirk_issues_new_refresh_token_and_old_stays_valid() {
    let t = spawn_with_quirks(Quirks {
        rotate_refresh_tokens: true,
        ..Quirks::default()
    })
    .await;
    let (_, refresh) = t.seller_tokens(Region::Na).await;
    let (status, body) = t.refresh_sp(&refresh).await;
    assert_eq!(status, 200);
    let new = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(new, refresh);
    assert_eq!(t.refresh_sp(&refresh).await.0, 200);
    assert_eq!(t.refresh_sp(&new).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_body_is_accepted() {
    let t = spawn().await;
    let (_, refresh) = t.seller_tokens(Region::Na).await;
    let resp = t
        .http
        .post(t.url(NA_LWA, "/auth/o2/token"))
        .header("content-type", "application/json; charset=utf-8")
        .body(
            json!({
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": defaults::SP_API_CLIENT_ID,
                "client_secret": defaults::SP_API_CLIENT_SECRET,
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refresh_token"], refresh.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_header_over_form_body_is_invalid_client() {
    let t = spawn().await;
    let resp = t
        .http
        .post(t.url(NA_LWA, "/auth/o2/token"))
        .header("content-type", "application/json")
        .body(format!(
            "grant_type=client_credentials&scope=sellingpartnerapi::notifications&client_id={}&client_secret={}",
            defaults::SP_API_CLIENT_ID,
            defaults::SP_API_CLIENT_SECRET
        ))
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_lwa_error(status, &body, 401, "invalid_client");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_with_charset_and_basic_auth_are_accepted() {
    let t = spawn().await;
    let basic = STANDARD.encode(format!(
        "{}:{}",
        defaults::SP_API_CLIENT_ID,
        defaults::SP_API_CLIENT_SECRET
    ));
    let resp = t
        .http
        .post(t.url(NA_LWA, "/auth/o2/token"))
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded;charset=UTF-8")
        .body("grant_type=client_credentials&scope=sellingpartnerapi%3A%3Anotifications")
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());

    // Basic and a body secret together: two authentication methods.
    let resp = t
        .http
        .post(t.url(NA_LWA, "/auth/o2/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            ("client_secret", defaults::SP_API_CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_lwa_error(status, &body, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn form_encoded_secret_with_special_characters_works() {
    let t = spawn().await;
    let app = t
        .control
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            client_secrets: vec!["s3cr+t&with%25=odd chars".to_owned()],
            ..Default::default()
        })
        .await;
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::notifications"),
                ("client_id", &app.client_id),
                ("client_secret", "s3cr+t&with%25=odd chars"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let requests = t.control.requests(Some(NA_LWA)).await;
    let sent = &requests.last().unwrap().body;
    assert!(
        sent.contains("client_secret=s3cr%2Bt%26with%2525%3Dodd+chars"),
        "{sent}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_client_and_wrong_secret_are_invalid_client() {
    let t = spawn().await;
    for (id, secret) in [
        (
            "amzn1.application-oa2-client.nope",
            defaults::SP_API_CLIENT_SECRET,
        ),
        (defaults::SP_API_CLIENT_ID, "amzn1.oa2-cs.v1.wrong"),
        (defaults::SP_API_CLIENT_ID, defaults::ADS_CLIENT_SECRET),
    ] {
        let (status, body) = t
            .token(
                NA_LWA,
                &[
                    ("grant_type", "client_credentials"),
                    ("scope", "sellingpartnerapi::notifications"),
                    ("client_id", id),
                    ("client_secret", secret),
                ],
            )
            .await;
        assert_lwa_error(status, &body, 401, "invalid_client");
        assert_eq!(body["error_description"], "Client authentication failed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_secret_is_accepted() {
    let t = spawn().await;
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::notifications"),
                ("client_id", defaults::SP_API_CLIENT_ID),
                ("client_secret", defaults::SP_API_PREVIOUS_CLIENT_SECRET),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grant_type_missing_or_unknown() {
    let t = spawn().await;
    let [id, secret] = sp_creds();
    let (status, body) = t.token(NA_LWA, &[id, secret]).await;
    assert_lwa_error(status, &body, 400, "invalid_request");
    let (status, body) = t.token(NA_LWA, &[("grant_type", "password"), id, secret]).await;
    assert_lwa_error(status, &body, 400, "unsupported_grant_type");
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_with_scope_is_invalid_request() {
    let t = spawn().await;
    let (_, refresh) = t.seller_tokens(Region::Na).await;
    let [id, secret] = sp_creds();
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("scope", "sellingpartnerapi::notifications"),
                id,
                secret,
            ],
        )
        .await;
    assert_lwa_error(status, &body, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_credentials_rules() {
    let t = spawn().await;
    let [id, secret] = sp_creds();
    for (scope, want) in [
        ("sellingpartnerapi::unknown", "invalid_scope"),
        ("sellingpartnerapi::migration", "invalid_scope"),
    ] {
        let (status, body) = t
            .token(
                NA_LWA,
                &[("grant_type", "client_credentials"), ("scope", scope), id, secret],
            )
            .await;
        assert_lwa_error(status, &body, 400, want);
    }
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                (
                    "scope",
                    "sellingpartnerapi::notifications sellingpartnerapi::client_credential:rotation",
                ),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());
    let [aid, asecret] = ads_creds();
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::notifications"),
                aid,
                asecret,
            ],
        )
        .await;
    assert_lwa_error(status, &body, 400, "unauthorized_client");
}

#[tokio::test(flavor = "multi_thread")]
async fn scope_in_client_credentials_response_is_a_quirk() {
    let t = spawn_with_quirks(Quirks {
        client_credentials_scope_in_response: true,
        ..Quirks::default()
    })
    .await;
    let [id, secret] = sp_creds();
    let (_, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "sellingpartnerapi::notifications"),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(body["scope"], "sellingpartnerapi::notifications");
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_are_single_use_expire_and_belong_to_their_client() {
    let t = spawn().await;
    let code = t.sp_code(None, Region::Na).await;
    assert_eq!(t.exchange_sp(&code).await.0, 200);
    let (status, body) = t.exchange_sp(&code).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    assert_eq!(
        body["error_description"],
        "The request has an invalid grant parameter : code"
    );

    let code = t.sp_code(None, Region::Na).await;
    t.control.advance_clock(301.0).await;
    let (status, body) = t.exchange_sp(&code).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");

    let code = t.sp_code(None, Region::Na).await;
    t.control.advance_clock(299.0).await;
    assert_eq!(t.exchange_sp(&code).await.0, 200);

    // A code of the SP-API app presented by the Ads app.
    let code = t.sp_code(None, Region::Na).await;
    let [aid, asecret] = ads_creds();
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                aid,
                asecret,
            ],
        )
        .await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    let (status, _) = t
        .token(NA_LWA, &[("grant_type", "authorization_code"), aid, asecret])
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_are_bound_to_the_redirect_uri() {
    let t = spawn().await;
    let issue = |redirect: Option<&str>| {
        let redirect = redirect.map(str::to_owned);
        let control = t.control.clone();
        async move {
            control
                .authorize(AuthorizeSpec {
                    client_id: defaults::SP_API_CLIENT_ID.to_owned(),
                    redirect_uri: redirect,
                    ..Default::default()
                })
                .await
        }
    };
    let other = "http://127.0.0.1:8765/callback";

    // Consent named a redirect: the token request must name the same.
    let code = issue(Some(other)).await;
    let (status, body) = t.exchange_sp_with_redirect(&code, None).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    let (status, _) = t.exchange_sp_with_redirect(&code, Some(REDIRECT)).await;
    assert_eq!(status, 400);
    let (status, body) = t.exchange_sp_with_redirect(&code, Some(other)).await;
    assert_eq!(status, 200, "{body}");

    // Consent without redirect: delivered to the first registered one, which the token request
    // may name, but no other.
    let code = issue(None).await;
    let (status, _) = t.exchange_sp_with_redirect(&code, Some(other)).await;
    assert_eq!(status, 400);
    let (status, _) = t.exchange_sp_with_redirect(&code, Some(REDIRECT)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn pkce_s256_and_plain() {
    let t = spawn().await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let [id, secret] = ads_creds();
    let issue = |challenge: String, method: &str| {
        let control = t.control.clone();
        let method = method.to_owned();
        async move {
            control
                .authorize(AuthorizeSpec {
                    client_id: defaults::ADS_CLIENT_ID.to_owned(),
                    code_challenge: Some(challenge),
                    code_challenge_method: Some(method),
                    ..Default::default()
                })
                .await
        }
    };
    let exchange = |code: String, verifier: Option<&'static str>| {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code),
            (id.0, id.1.to_owned()),
            (secret.0, secret.1.to_owned()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier", v.to_owned()));
        }
        let http = t.http.clone();
        let url = t.url(NA_LWA, "/auth/o2/token");
        async move { read(http.post(url).form(&form).send().await.unwrap()).await }
    };
    let code = issue(challenge.clone(), "S256").await;
    let (status, body) = exchange(code.clone(), None).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    let (status, _) = exchange(code.clone(), Some("wrong-verifier-wrong-verifier-wrong-verifier")).await;
    assert_eq!(status, 400);
    let (status, body) = exchange(code, Some(verifier)).await;
    assert_eq!(status, 200, "{body}");

    let code = issue(verifier.to_owned(), "plain").await;
    assert_eq!(exchange(code, Some(verifier)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_token_of_another_client_or_revoked() {
    let t = spawn().await;
    let (access, refresh) = t.seller_tokens(Region::Na).await;
    let [aid, asecret] = ads_creds();
    let (status, body) = t
        .token(
            NA_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                aid,
                asecret,
            ],
        )
        .await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    assert_eq!(
        body["error_description"],
        "The request has an invalid grant parameter : refresh_token"
    );
    let (status, _) = t.refresh_sp("Atzr|IwEBInot-a-token").await;
    assert_eq!(status, 400);

    // Revoking the refresh token also kills the access tokens it minted.
    let (_, refreshed) = t.refresh_sp(&refresh).await;
    let minted = refreshed["access_token"].as_str().unwrap().to_owned();
    let n = t
        .control
        .revoke(RevokeSpec {
            refresh_token: Some(refresh.clone()),
            ..Default::default()
        })
        .await;
    assert_eq!(n, 3, "the refresh token and both access tokens of its grant");
    let (status, body) = t.refresh_sp(&refresh).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    assert_eq!(
        body["error_description"],
        "The request has an invalid grant parameter : refresh_token. User may have revoked or didn't grant the permission."
    );
    let resp = t
        .sp_get(SP_NA, "/sellers/v1/marketplaceParticipations", Some(&minted))
        .await;
    assert_eq!(resp.status(), 403);
    // The access token issued with the refresh token by the code exchange dies with it too.
    let resp = t
        .sp_get(SP_NA, "/sellers/v1/marketplaceParticipations", Some(&access))
        .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_api_apps_use_only_api_amazon_com_unless_quirk() {
    let t = spawn().await;
    let (_, refresh) = t.seller_tokens(Region::Eu).await;
    let [id, secret] = sp_creds();
    for host in [EU_LWA, FE_LWA] {
        let (status, body) = t
            .token(
                host,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &refresh),
                    id,
                    secret,
                ],
            )
            .await;
        assert_lwa_error(status, &body, 400, "unauthorized_client");
    }
    t.control
        .set_quirks(Quirks {
            sp_api_on_regional_lwa_hosts: true,
            ..Quirks::default()
        })
        .await;
    let (status, _) = t
        .token(
            EU_LWA,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                id,
                secret,
            ],
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_codes_and_tokens_are_global() {
    let t = spawn().await;
    let [id, secret] = ads_creds();
    let code = t
        .control
        .authorize(AuthorizeSpec {
            client_id: defaults::ADS_CLIENT_ID.to_owned(),
            ..Default::default()
        })
        .await;
    let (status, body) = t
        .token(
            FE_LWA,
            &[("grant_type", "authorization_code"), ("code", &code), id, secret],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().unwrap();
    for host in [NA_LWA, EU_LWA, FE_LWA] {
        let (status, _) = t
            .token(
                host,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh),
                    id,
                    secret,
                ],
            )
            .await;
        assert_eq!(status, 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expires_in_string_quirk_and_configured_ttl() {
    let t = spawn_with(FakeConfig {
        access_token_ttl: 120,
        quirks: Quirks {
            expires_in_as_string: true,
            ..Quirks::default()
        },
        ..FakeConfig::default()
    })
    .await;
    let code = t.sp_code(None, Region::Na).await;
    let (_, body) = t.exchange_sp(&code).await;
    assert_eq!(body["expires_in"], json!("120"));
    let access = body["access_token"].as_str().unwrap();
    t.control.advance_clock(121.0).await;
    let resp = t
        .sp_get(SP_NA, "/sellers/v1/marketplaceParticipations", Some(access))
        .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn retired_secret_stops_working_seven_days_after_rotation() {
    let t = spawn().await;
    let grantless = t.grantless("sellingpartnerapi::client_credential:rotation").await;
    let resp = t
        .http
        .post(t.url(SP_NA, "/applications/2023-11-30/clientSecret"))
        .header("x-amz-access-token", &grantless)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let notifications = t.control.notifications().await;
    let new_secret = notifications[0]["payload"]["applicationOAuthClientNewSecret"]["newClientSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |secret: String| {
        let http = t.http.clone();
        let url = t.url(NA_LWA, "/auth/o2/token");
        async move {
            http.post(url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("scope", "sellingpartnerapi::notifications"),
                    ("client_id", defaults::SP_API_CLIENT_ID),
                    ("client_secret", &secret),
                ])
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call(new_secret.clone()).await, 200);
    assert_eq!(call(defaults::SP_API_CLIENT_SECRET.to_owned()).await, 200);
    assert_eq!(
        call(defaults::SP_API_PREVIOUS_CLIENT_SECRET.to_owned()).await,
        401
    );
    t.control.advance_clock(7.0 * 86_400.0 - 10.0).await;
    assert_eq!(call(defaults::SP_API_CLIENT_SECRET.to_owned()).await, 200);
    t.control.advance_clock(11.0).await;
    assert_eq!(call(defaults::SP_API_CLIENT_SECRET.to_owned()).await, 401);
    assert_eq!(call(new_secret).await, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_api_authorizations_end_after_365_days_self_authorizations_do_not() {
    let t = spawn().await;
    let (_, refresh) = t.seller_tokens(Region::Na).await;
    let private = t
        .control
        .self_authorize(defaults::SP_API_CLIENT_ID, defaults::SELLER_NA)
        .await;
    t.control.advance_clock(364.0 * 86_400.0).await;
    assert_eq!(t.refresh_sp(&refresh).await.0, 200);
    t.control.advance_clock(2.0 * 86_400.0).await;
    let (status, body) = t.refresh_sp(&refresh).await;
    assert_lwa_error(status, &body, 400, "invalid_grant");
    assert_eq!(t.refresh_sp(&private).await.0, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn capital_o_path_works_and_get_is_404() {
    let t = spawn().await;
    let [id, secret] = sp_creds();
    let resp = t
        .http
        .post(t.url(NA_LWA, "/auth/O2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "sellingpartnerapi::notifications"),
            id,
            secret,
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = t.http.get(t.url(NA_LWA, "/auth/o2/token")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}
