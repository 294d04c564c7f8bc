//! The three grants as Amazon receives them, and client-secret fallback.

use fake_amazon::{AppKind, AppSpec, AuthorizeSpec, defaults};
use lwa::{AppCredentials, AuthorizationCode, Grant, Pkce, Region, SecretUsed};

use crate::support::World;

fn body_of_last(requests: &[fake_amazon::RecordedRequest]) -> String {
    requests.last().expect("a recorded request").body.clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_bodies_are_exactly_form_encoded() {
    let world = World::start().await;
    let secret = "amzn1.oa2-cs.v1.a+b&c%d e";
    let app = world
        .fake
        .control()
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            client_secrets: vec![secret.to_owned()],
            redirect_uris: vec!["https://broker.example.com/auth/redirect".to_owned()],
            ..AppSpec::default()
        })
        .await;
    let credentials = AppCredentials::new(app.client_id.clone(), secret);
    let code = world
        .fake
        .control()
        .authorize(AuthorizeSpec {
            client_id: app.client_id.clone(),
            selling_partner_id: Some(defaults::SELLER_NA.into()),
            redirect_uri: Some("https://broker.example.com/auth/redirect".into()),
            ..AuthorizeSpec::default()
        })
        .await;

    let tokens = world
        .client
        .exchange_code(
            "api.amazon.com",
            &credentials,
            &AuthorizationCode::new(code.clone()),
            Some("https://broker.example.com/auth/redirect"),
            None,
        )
        .await
        .unwrap();
    let requests = world.fake.control().requests(Some("api.amazon.com")).await;
    let sent = requests.last().unwrap();
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, "/auth/o2/token");
    assert_eq!(
        body_of_last(&requests),
        format!(
            "grant_type=authorization_code&code={code}&redirect_uri=https%3A%2F%2Fbroker.example.com%2Fauth%2Fredirect&client_id={}&client_secret=amzn1.oa2-cs.v1.a%2Bb%26c%25d+e",
            app.client_id
        )
    );
    let content_type = sent
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.clone());
    assert_eq!(
        content_type.as_deref(),
        Some("application/x-www-form-urlencoded;charset=UTF-8")
    );

    let refresh_token = tokens.refresh_token.unwrap();
    world
        .client
        .refresh("api.amazon.com", &credentials, &refresh_token)
        .await
        .unwrap();
    let requests = world.fake.control().requests(Some("api.amazon.com")).await;
    let encoded_refresh: String =
        url::form_urlencoded::byte_serialize(refresh_token.expose().as_bytes()).collect();
    assert_eq!(
        body_of_last(&requests),
        format!(
            "grant_type=refresh_token&refresh_token={encoded_refresh}&client_id={}&client_secret=amzn1.oa2-cs.v1.a%2Bb%26c%25d+e",
            app.client_id
        )
    );

    let grantless = world
        .client
        .client_credentials(
            &credentials,
            &[
                "sellingpartnerapi::notifications",
                "sellingpartnerapi::client_credential:rotation",
            ],
        )
        .await
        .unwrap();
    assert!(grantless.refresh_token.is_none());
    let requests = world.fake.control().requests(Some("api.amazon.com")).await;
    assert_eq!(
        body_of_last(&requests),
        format!(
            "grant_type=client_credentials&scope=sellingpartnerapi%3A%3Anotifications+sellingpartnerapi%3A%3Aclient_credential%3Arotation&client_id={}&client_secret=amzn1.oa2-cs.v1.a%2Bb%26c%25d+e",
            app.client_id
        )
    );
    // The grant's own rendering is what went over the wire.
    assert_eq!(
        Grant::RefreshToken(refresh_token.clone()).form_body(&app.client_id, &credentials.secret),
        format!(
            "grant_type=refresh_token&refresh_token={encoded_refresh}&client_id={}&client_secret=amzn1.oa2-cs.v1.a%2Bb%26c%25d+e",
            app.client_id
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ads_code_with_pkce_is_exchanged_on_the_regional_token_host() {
    let world = World::start().await;
    let pkce = Pkce::generate();
    let code = world
        .fake
        .control()
        .authorize(AuthorizeSpec {
            client_id: defaults::ADS_CLIENT_ID.into(),
            redirect_uri: Some(defaults::DEFAULT_REDIRECT_URIS[0].into()),
            code_challenge: Some(pkce.challenge().into()),
            code_challenge_method: Some("S256".into()),
            ..AuthorizeSpec::default()
        })
        .await;
    let manager = world.manager(lwa::Api::Ads, Region::Eu, World::ads_app(), "ads");
    manager
        .authenticate_with_code(
            &AuthorizationCode::new(code),
            Some(defaults::DEFAULT_REDIRECT_URIS[0]),
            Some(pkce.verifier()),
        )
        .await
        .unwrap();
    assert_eq!(manager.info().status, lwa::TokenStatus::Valid);
    let counters = world.fake.control().counters().await;
    let on_uk: u64 = counters
        .lwa
        .iter()
        .filter(|c| c.host == "api.amazon.co.uk" && c.outcome == "ok")
        .map(|c| c.count)
        .sum();
    assert_eq!(
        on_uk, 1,
        "EU Ads grants go to api.amazon.co.uk: {:?}",
        counters.lwa
    );
    let requests = world.fake.control().requests(Some("api.amazon.co.uk")).await;
    assert!(body_of_last(&requests).contains(&format!("&code_verifier={}&", pkce.verifier().expose())));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_secret_is_tried_once_after_invalid_client() {
    let world = World::start().await;
    let app = world
        .fake
        .control()
        .register_app(AppSpec {
            kind: AppKind::SpApi,
            client_secrets: vec!["amzn1.oa2-cs.v1.old-but-valid".into()],
            ..AppSpec::default()
        })
        .await;
    let refresh_token = world
        .fake
        .control()
        .self_authorize(&app.client_id, defaults::SELLER_NA)
        .await;

    let rotated = AppCredentials::new(app.client_id.clone(), "amzn1.oa2-cs.v1.newer-not-yet-known")
        .with_previous_secret("amzn1.oa2-cs.v1.old-but-valid");
    let response = world
        .client
        .refresh("api.amazon.com", &rotated, &refresh_token.clone().into())
        .await
        .unwrap();
    assert_eq!(response.secret_used, SecretUsed::Previous);
    let counters = world.fake.control().counters().await;
    assert_eq!(counters.lwa_outcomes("refresh_token", "invalid_client"), 1);
    assert_eq!(counters.lwa_outcomes("refresh_token", "ok"), 1);

    let current = AppCredentials::new(app.client_id.clone(), "amzn1.oa2-cs.v1.old-but-valid")
        .with_previous_secret("amzn1.oa2-cs.v1.unused");
    let response = world
        .client
        .refresh("api.amazon.com", &current, &refresh_token.clone().into())
        .await
        .unwrap();
    assert_eq!(response.secret_used, SecretUsed::Current);

    // Both wrong: one try each, then a configuration error, no retries.
    world.fake.control().reset_counters().await;
    let wrong = AppCredentials::new(app.client_id.clone(), "amzn1.oa2-cs.v1.wrong1")
        .with_previous_secret("amzn1.oa2-cs.v1.wrong2");
    let error = world
        .client
        .refresh("api.amazon.com", &wrong, &refresh_token.into())
        .await
        .unwrap_err();
    assert_eq!(error.class(), lwa::ErrorClass::Configuration);
    assert_eq!(error.code(), Some("invalid_client"));
    assert!(!error.to_string().contains("wrong1"));
    assert_eq!(world.fake.control().counters().await.lwa_total(), 2);
}
