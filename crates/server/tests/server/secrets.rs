//! LWA client-secret rotation: Amazon's notifications posted to the operator's endpoint, the
//! secrets every process uses (newest first, the previous one only until its expiry), and the
//! expiry warnings.

use fake_amazon::{FaultScript, FaultSpec, FaultTarget, defaults};
use lwa_server::apps::{self, NewSecret, SetOutcome};
use lwa_server::config::Settings;
use serde_json::{Value, json};

use crate::support::{TestApp, logs, spawn, spawn_with};

const SP_APP: &str = "sandbox-sp-api";

async fn admin_token(app: &TestApp) -> String {
    lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap()
        .to_string()
}

fn body_of(v: &mut Value) -> &mut Value {
    &mut v["payload"]["applicationOAuthClientNewSecret"]
}

fn new_secret_notification(client_id: &str, secret: &str, old_expiry: &str) -> Value {
    json!({
        "notificationVersion": "1.0",
        "notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET",
        "payload": {"applicationOAuthClientNewSecret": {
            "clientId": client_id,
            "newClientSecret": secret,
            "newClientSecretExpiryTime": "2030-01-01T00:00:00.000Z",
            "oldClientSecretExpiryTime": old_expiry,
        }},
        "notificationMetadata": {"applicationId": defaults::SP_API_APPLICATION_ID,
            "subscriptionId": "s", "publishTime": "2026-11-24T10:00:00.000Z", "notificationId": "n"},
    })
}

async fn post_notification(app: &TestApp, token: &str, body: &str, content_type: &str) -> (u16, Value) {
    let r = app
        .http
        .post(format!("{}/admin/api/app-secret-notifications", app.url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

/// Token-endpoint calls the fake received with this client secret.
async fn token_calls_with(app: &TestApp, secret: &str) -> usize {
    app.fake
        .control()
        .requests(None)
        .await
        .iter()
        .filter(|r| r.path.eq_ignore_ascii_case("/auth/o2/token"))
        .filter(|r| {
            url::form_urlencoded::parse(r.body.as_bytes()).any(|(k, v)| k == "client_secret" && v == secret)
        })
        .count()
}

/// Imports a self-authorized connection; its id.
async fn import(app: &TestApp, seller: &str) -> String {
    let token = app
        .fake
        .control()
        .self_authorize(defaults::SP_API_CLIENT_ID, seller)
        .await;
    let r = app
        .post_json(
            "/v1/connections/import",
            &json!([{"region": "na", "refresh_token": token, "selling_partner_id": seller}]),
        )
        .await;
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["results"][0]["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn vend(app: &TestApp, id: &str) -> (u16, Value) {
    let r = app
        .post_json(&format!("/v1/connections/{id}/access-token"), &json!({}))
        .await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The next LWA call of the SP-API app is refused with `invalid_client`, as Amazon refuses a
/// secret it no longer knows.
async fn refuse_next_lwa_call(app: &TestApp) {
    app.fake.control().clear_faults().await;
    app.fake
        .control()
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            script: Some(FaultScript {
                count: 1,
                status: Some(401),
                error: Some("invalid_client".into()),
                drop: false,
            }),
            ..FaultSpec::default()
        })
        .await;
}

#[tokio::test]
async fn a_posted_new_secret_is_used_and_the_old_one_only_until_amazons_expiry() {
    let app = spawn().await;
    let id = import(&app, "A1ROTATE").await;
    let old = defaults::SP_API_CLIENT_SECRET;
    let token = admin_token(&app).await;

    // Amazon rotates: the new secret comes only in the notification.
    apps::rotate_secret_at_amazon(&app.state, SP_APP, lwa::Region::Na)
        .await
        .unwrap();
    let notification = app
        .fake
        .control()
        .notifications()
        .await
        .into_iter()
        .rfind(|n| n["notificationType"] == "APPLICATION_OAUTH_CLIENT_NEW_SECRET")
        .expect("the fake sent the new secret");
    let body = &notification["payload"]["applicationOAuthClientNewSecret"];
    let new = body["newClientSecret"].as_str().unwrap().to_owned();
    let old_expiry = body["oldClientSecretExpiryTime"].as_str().unwrap().to_owned();
    let (status, answer) =
        post_notification(&app, &token, &notification.to_string(), "application/json").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["app"], SP_APP);
    assert_eq!(answer["outcome"], "secret_set");
    let seconds = |t: &str| lwa_server::time::parse_rfc3339(t).unwrap() / 1000;
    assert_eq!(
        seconds(answer["previous_secret_valid_until"].as_str().unwrap()),
        seconds(&old_expiry),
        "the old secret's expiry is Amazon's"
    );
    let stored = app.state.store.app_secret(SP_APP).await.unwrap().unwrap();
    assert_eq!(
        stored.previous_expires_at_ms,
        lwa_server::time::parse_rfc3339(&old_expiry)
    );
    assert!(!answer.to_string().contains(&new), "the answer holds no secret");
    // Posting it again changes nothing.
    let (status, again) =
        post_notification(&app, &token, &notification.to_string(), "application/json").await;
    assert_eq!(
        (status, again["outcome"].as_str()),
        (200, Some("already_current"))
    );

    // The next refresh uses the new secret, and only it.
    app.fake.control().clear_requests().await;
    app.advance(3600.0).await;
    assert_eq!(vend(&app, &id).await.0, 200);
    assert_eq!(token_calls_with(&app, &new).await, 1);
    assert_eq!(token_calls_with(&app, old).await, 0);

    // Within Amazon's 7 days: when LWA refuses the new one, the old one still serves.
    app.fake.control().clear_requests().await;
    app.advance(3600.0).await;
    refuse_next_lwa_call(&app).await;
    assert_eq!(vend(&app, &id).await.0, 200);
    assert_eq!(token_calls_with(&app, &new).await, 1);
    assert_eq!(token_calls_with(&app, old).await, 1, "the fallback");

    // Past the old secret's expiry Amazon refuses it, and the broker never sends it again, not
    // even when the new one is refused.
    app.advance(7.0 * 86_400.0).await;
    app.fake.control().clear_requests().await;
    refuse_next_lwa_call(&app).await;
    let (status, answer) = vend(&app, &id).await;
    assert_ne!(status, 200, "{answer}");
    assert_eq!(
        token_calls_with(&app, old).await,
        0,
        "the expired secret was sent"
    );
    app.fake.control().clear_faults().await;
    app.advance(3600.0).await;
    assert_eq!(vend(&app, &id).await.0, 200);
    assert_eq!(token_calls_with(&app, old).await, 0);
    assert!(token_calls_with(&app, &new).await >= 2);
    // The fake itself no longer takes the old secret.
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", "sellingpartnerapi::notifications"),
        ("client_id", defaults::SP_API_CLIENT_ID),
        ("client_secret", old),
    ];
    let r = app
        .http
        .post(format!("{}/api.amazon.com/auth/o2/token", app.fake.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");

    // The expiry announcement is recorded and logged; no secret in the log line.
    let expiry = app
        .fake
        .control()
        .notify_secret_expiry(defaults::SP_API_CLIENT_ID, 30 * 86_400)
        .await;
    let (status, answer) = post_notification(&app, &token, &expiry.to_string(), "application/json").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "expiry_recorded");
    let stored = app.state.store.app_secret(SP_APP).await.unwrap().unwrap();
    assert_eq!(
        stored.announced_expiry_at_ms.map(lwa_server::time::rfc3339),
        answer["expires_at"].as_str().map(str::to_owned)
    );
    let logged = logs();
    assert!(logged.contains("Amazon announced the expiry"), "{logged}");
    assert!(!logged.contains(&new) && !logged.contains(old));
}

#[tokio::test]
async fn another_process_sets_a_secret_and_this_one_uses_it_within_30_seconds() {
    let mut captured: Option<Settings> = None;
    let app = spawn_with(|s| captured = Some(s.clone())).await;
    let settings = captured.unwrap();
    // A second process on the same database (as `lwa-broker apps set-secret` is).
    let other = lwa_server::open_state(&settings, url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let config = app.state.app(SP_APP).unwrap().clone();
    let new = "amzn1.oa2-cs.v1.0123456789abcdef0123456789abcdef-set-elsewhere";
    let before = other.now_ms();
    let outcome = apps::set_secret(
        &other,
        SP_APP,
        NewSecret {
            secret: new.into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    let SetOutcome::SecretSet {
        previous_expires_at_ms,
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    let grace = previous_expires_at_ms - apps::RETIRED_SECRET_GRACE_MS;
    assert!((before..=other.now_ms()).contains(&grace), "seven days from now");
    // At once in the process that set it.
    assert!(other.credentials(&config).await.secret.same_as(new));
    // Here: the copy read at start serves until it is 30 s old, then the database's.
    let here = app.state.credentials(&config).await;
    assert!(here.secret.same_as(defaults::SP_API_CLIENT_SECRET));
    app.advance(31.0).await;
    let here = app.state.credentials(&config).await;
    assert!(here.secret.same_as(new), "not re-read after 30 s");
    let previous = here.previous_secret.expect("the replaced secret is the fallback");
    assert!(previous.same_as(defaults::SP_API_CLIENT_SECRET));

    // A restart with the old secret still in the configuration keeps the newer one.
    let restarted = lwa_server::open_state(&settings, url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    assert!(restarted.credentials(&config).await.secret.same_as(new));
    // So does one after a second rotation, when the configured secret is neither of the two.
    let newer = "amzn1.oa2-cs.v1.0123456789abcdef-second-rotation";
    apps::set_secret(
        &restarted,
        SP_APP,
        NewSecret {
            secret: newer.into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    let restarted = lwa_server::open_state(&settings, url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let credentials = restarted.credentials(&config).await;
    assert!(
        credentials.secret.same_as(newer),
        "an unchanged configuration changed nothing"
    );
    assert!(credentials.previous_secret.unwrap().same_as(new));
    // A secret changed in the configuration, unknown to the database, is taken as newly set.
    let mut changed = settings.clone();
    let configured = "amzn1.oa2-cs.v1.fedcba9876543210-typed-into-the-config";
    changed.apps[0].credentials.secret = configured.into();
    let restarted = lwa_server::open_state(&changed, url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let credentials = restarted.credentials(&config).await;
    assert!(credentials.secret.same_as(configured));
    assert!(credentials.previous_secret.unwrap().same_as(newer));

    // The previous secret is never set back; the newest is a no-op.
    let e = apps::set_secret(
        &restarted,
        SP_APP,
        NewSecret {
            secret: newer.into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (409, "previous_client_secret"));
    let same = apps::set_secret(
        &restarted,
        SP_APP,
        NewSecret {
            secret: configured.into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(same, SetOutcome::AlreadyCurrent);
    let e = apps::set_secret(
        &restarted,
        "no-such-app",
        NewSecret {
            secret: configured.into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.status.as_u16(), 404);
    assert!(e.message.contains("sandbox-sp-api"), "{}", e.message);
}

#[tokio::test]
async fn expiry_warnings_fire_at_30_and_7_days_before_180_once_each() {
    let mut captured: Option<Settings> = None;
    let app = spawn_with(|s| captured = Some(s.clone())).await;
    let other = lwa_server::open_state(&captured.unwrap(), url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let due = || async { apps::due_secret_warnings(&app.state).await.unwrap() };
    assert!(due().await.is_empty());
    app.advance(149.0 * 86_400.0).await;
    assert!(due().await.is_empty(), "31 days left: nothing yet");
    app.advance(86_400.0 + 60.0).await;
    let warnings = due().await;
    // The SP-API app's secret, seeded at start; the Ads app has no deadline.
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let sp = &warnings[0];
    assert_eq!(
        (sp.app.as_str(), sp.threshold_days, sp.days_left),
        (SP_APP, 30, 29)
    );
    assert_eq!(sp.client_id, defaults::SP_API_CLIENT_ID);
    assert_eq!(sp.event_data()["threshold_days"], 30);
    assert_eq!(apps::SecretWarning::EVENT, "app.client_secret_expiring");
    assert!(due().await.is_empty(), "once");
    assert!(
        apps::due_secret_warnings(&other).await.unwrap().is_empty(),
        "once across processes"
    );
    app.advance(23.0 * 86_400.0).await;
    let warnings = due().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!((warnings[0].threshold_days, warnings[0].days_left), (7, 6));
    assert!(due().await.is_empty());
    assert!(logs().contains("must be rotated before Amazon's 180-day deadline"));

    // A new secret starts its own 180 days: its warnings fire again, and a secret first seen
    // past both thresholds gets one warning, the nearer one.
    apps::set_secret(
        &app.state,
        SP_APP,
        NewSecret {
            secret: "amzn1.oa2-cs.v1.0123456789abcdef-warned-again".into(),
            old_secret_expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    app.advance(175.0 * 86_400.0).await;
    let warnings = due().await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].threshold_days, 7);
    assert!(due().await.is_empty());
    let stored = app.state.store.app_secret(SP_APP).await.unwrap().unwrap();
    assert_eq!(stored.warnings_sent.len(), 2);
    let listed = apps::secret_status(&app.state).await.unwrap();
    let ads = listed.iter().find(|a| a.kind == "ads").unwrap();
    assert_eq!(
        (ads.rotation_deadline.as_ref(), ads.days_until_deadline),
        (None, None)
    );
    let sp = listed.iter().find(|a| a.name == SP_APP).unwrap();
    assert_eq!(sp.days_until_deadline, Some(4));
}

#[tokio::test]
async fn the_notification_endpoint_refuses_bad_input() {
    let app = spawn().await;
    let token = admin_token(&app).await;
    let client = defaults::SP_API_CLIENT_ID;
    let marker = "amzn1.oa2-cs.v1.Do-Not-Echo-0123456789";
    let ok_secret = "amzn1.oa2-cs.v1.0123456789abcdef-posted";
    let expiry = "2030-01-01T00:00:00Z";
    let with = |f: &dyn Fn(&mut Value)| {
        let mut n = new_secret_notification(client, ok_secret, expiry);
        f(&mut n);
        n.to_string()
    };
    let cases: Vec<(&str, String, &str, u16, &str, &str)> = vec![
        ("plain text", "x".into(), "text/plain", 415, "unsupported_media_type", "send a JSON body"),
        ("not JSON", "{nope".into(), "application/json", 400, "invalid_json", "is not valid JSON"),
        ("an array", "[]".into(), "application/json", 400, "invalid_json", "must be a JSON object"),
        ("empty object", "{}".into(), "application/json", 400, "invalid_notification", "notification.notificationType is missing or empty"),
        ("unknown type", json!({"notificationType": "ANY_OFFER_CHANGED", "payload": {}}).to_string(), "application/json", 400, "invalid_notification", "\"ANY_OFFER_CHANGED\" is not APPLICATION_OAUTH_CLIENT_NEW_SECRET"),
        ("no payload", with(&|n| { n.as_object_mut().unwrap().remove("payload"); }), "application/json", 400, "invalid_notification", "notification.payload must be an object"),
        ("no body", with(&|n| n["payload"] = json!({})), "application/json", 400, "invalid_notification", "payload.applicationOAuthClientNewSecret must be an object"),
        ("no secret", with(&|n| { body_of(n).as_object_mut().unwrap().remove("newClientSecret"); }), "application/json", 400, "invalid_notification", "payload.applicationOAuthClientNewSecret.newClientSecret is missing or empty"),
        ("secret a number", with(&|n| body_of(n)["newClientSecret"] = json!(12345)), "application/json", 400, "invalid_notification", "newClientSecret must be a string"),
        ("secret with a space", with(&|n| body_of(n)["newClientSecret"] = json!(format!("{marker} x"))), "application/json", 400, "invalid_notification", "newClientSecret: a client secret is one word"),
        ("no client id", with(&|n| { body_of(n).as_object_mut().unwrap().remove("clientId"); }), "application/json", 400, "invalid_notification", "clientId is missing or empty"),
        ("bad expiry", with(&|n| body_of(n)["oldClientSecretExpiryTime"] = json!("in a week")), "application/json", 400, "invalid_notification", "oldClientSecretExpiryTime must be an ISO 8601 date-time"),
        ("unknown client id", with(&|n| body_of(n)["clientId"] = json!("amzn1.application-oa2-client.other")), "application/json", 400, "unknown_client_id", "no configured app has the client id"),
        ("expiry without time", json!({"notificationType": "APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY", "payload": {"applicationOAuthClientSecretExpiry": {"clientId": client}}}).to_string(), "application/json", 400, "invalid_notification", "clientSecretExpiryTime is missing or empty"),
        ("the previous secret", new_secret_notification(client, defaults::SP_API_CLIENT_SECRET, expiry).to_string(), "application/json", 409, "previous_client_secret", "never set back"),
        ("too large", format!("{{\"x\":\"{}\"}}", "a".repeat(2 * 1024 * 1024)), "application/json", 413, "body_too_large", "too large"),
    ];
    // The previous-secret case needs a newer secret first.
    let (status, answer) = post_notification(&app, &token, &with(&|_| {}), "application/json").await;
    assert_eq!(status, 200, "{answer}");
    let before = app.state.store.app_secrets().await.unwrap();
    for (what, body, content_type, status, code, message) in cases {
        let (got, answer) = post_notification(&app, &token, &body, content_type).await;
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        let text = answer["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{what}: {text}");
        assert!(
            !text.contains(marker) && !text.contains(ok_secret),
            "{what} echoed a secret: {text}"
        );
    }
    assert_eq!(
        app.state.store.app_secrets().await.unwrap(),
        before,
        "nothing changed"
    );
    assert!(!logs().contains(marker));
}
