//! The background refresher against the fake Amazon, the clock moved and `run_once()` called
//! the way the loop in `serve` calls it: freshness over simulated hours, spreading, backoff on a
//! failing connection, `invalid_grant`, tenant-held secrets, sharing a vend's refresh, Ads
//! profiles and authorizations nearing 365 days.

use std::collections::HashMap;
use std::time::Duration;

use fake_amazon::browser::Choice;
use fake_amazon::{FaultSpec, FaultTarget, RevokeSpec, defaults};
use lwa_server::refresher::RunReport;
use lwa_server::vend::OwnClaim;
use serde_json::{Value, json};

use crate::support::{RETURN, TestApp, spawn, spawn_with};
use crate::webhooks::{Receiver, deliver_until, set_webhook};

const BUFFER_S: i64 = 300;
const LIFETIME_S: i64 = 3600;

impl TestApp {
    /// `n` self-authorized sellers imported over HTTP (one validating refresh each); returns
    /// (connection id, refresh token) pairs.
    async fn import_sellers(&self, prefix: &str, n: usize) -> Vec<(String, String)> {
        let control = self.fake.control();
        let mut tokens = Vec::with_capacity(n);
        let mut body = String::new();
        for i in 0..n {
            let seller = format!("A1{prefix}{i:05}");
            let token = control.self_authorize(defaults::SP_API_CLIENT_ID, &seller).await;
            body.push_str(
                &json!({"region": "na", "refresh_token": token, "selling_partner_id": seller}).to_string(),
            );
            body.push('\n');
            tokens.push(token);
        }
        let r = self
            .http
            .post(format!("{}/v1/connections/import", self.url))
            .bearer_auth(&self.key)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let out: Value = r.json().await.unwrap();
        assert_eq!(out["imported"], n as u64, "{out}");
        out["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(tokens)
            .map(|(r, t)| (r["connection"]["id"].as_str().unwrap().to_owned(), t))
            .collect()
    }

    /// Every refresh-token grant the fake recorded since the last clear: (fake time, token).
    /// The fake keeps the last 1,000 requests: long tests take them as they go
    /// ([`TestApp::take_refresh_grants`]).
    async fn refresh_grants(&self) -> Vec<(i64, String)> {
        self.fake
            .control()
            .requests(Some("api.amazon.com"))
            .await
            .into_iter()
            .filter(|r| r.path == "/auth/o2/token")
            .filter_map(|r| {
                let form: HashMap<String, String> = url::form_urlencoded::parse(r.body.as_bytes())
                    .into_owned()
                    .collect();
                (form.get("grant_type").map(String::as_str) == Some("refresh_token"))
                    .then(|| (r.at_ms, form.get("refresh_token").cloned().unwrap_or_default()))
            })
            .collect()
    }

    /// [`TestApp::refresh_grants`], then clears the fake's record.
    async fn take_refresh_grants(&self) -> Vec<(i64, String)> {
        let grants = self.refresh_grants().await;
        self.fake.control().clear_requests().await;
        grants
    }

    async fn run_refresher(&self) -> RunReport {
        self.state.refresher.run_once(&self.state).await
    }

    /// The background refresher's claim of the one due connection `id`, stopped before its
    /// refresh: the claimed row and the in-process note of the claim.
    async fn claim_as_refresher(&self, id: &str) -> (lwa_store::DueRefresh, OwnClaim) {
        let now = self.state.now_ms();
        let mut claimed = self
            .state
            .store
            .claim_due_refreshes(now, 120_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let claimed = claimed.remove(0);
        let claim = OwnClaim::new(&self.state, id, claimed.schedule.refresh_lease_until_ms);
        (claimed, claim)
    }

    /// The refresher's task for `claimed` going on with its claim.
    async fn refresher_task(
        &self,
        claimed: &lwa_store::DueRefresh,
    ) -> Result<std::sync::Arc<lwa_server::vend::CachedToken>, lwa_server::vend::VendError> {
        self.state
            .vendor
            .refresh_due(
                &self.state,
                &claimed.id,
                Some((claimed.connection.clone(), claimed.schedule.clone())),
                None,
            )
            .await
    }

    async fn vend_json(&self, id: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/connections/{id}/access-token", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn status_of(&self, id: &str) -> Value {
        self.get_auth(&format!("/v1/connections/{id}"))
            .await
            .json()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_stay_fresh_for_three_simulated_hours() {
    // The per-app budget would pace 1,000 refreshes over 50 s of real time; this test is about
    // the schedule.
    let app = spawn_with(|s| s.refresher.budget_per_second = 10_000.0).await;
    let connections = app.import_sellers("FRESH", 1000).await;
    app.fake.control().clear_requests().await;
    // Once: every imported connection is scheduled (their tokens are fresh: no LWA call).
    let first = app.run_refresher().await;
    assert_eq!(first.due, 1000);
    assert!(
        app.refresh_grants().await.is_empty(),
        "fresh tokens are not refreshed"
    );

    let step = 60.0;
    let steps = (3 * 3600) / step as i64;
    let mut vended = 0;
    let mut grants = Vec::new();
    for n in 0..steps {
        app.advance(step).await;
        let report = app.run_refresher().await;
        grants.extend(app.take_refresh_grants().await);
        assert_eq!((report.failed, report.needs_reauth), (0, 0), "{report:?}");
        // Tenants vend a rotating sample meanwhile: never a token inside the buffer.
        for k in 0..10 {
            let (id, _) = &connections[(n as usize * 10 + k) % connections.len()];
            let (status, body) = app.vend_json(id).await;
            assert_eq!(status, 200, "{body}");
            let left = body["expires_in"].as_i64().unwrap();
            assert!(left >= BUFFER_S, "vended with {left} s left");
            vended += 1;
        }
    }
    assert_eq!(vended, steps * 10);

    let mut by_token: HashMap<String, Vec<i64>> = HashMap::new();
    for (at, token) in grants {
        by_token.entry(token).or_default().push(at);
    }
    for (id, token) in &connections {
        let times = by_token.get(token).map(Vec::as_slice).unwrap_or(&[]);
        // Imported at 0, refreshed inside each token's buffer: three times in three hours.
        assert_eq!(times.len(), 3, "{id} was refreshed at {times:?}");
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= (LIFETIME_S - BUFFER_S) * 1000,
                "{id} refreshed twice within {} ms",
                pair[1] - pair[0]
            );
        }
    }
    // Every token the database holds now is fresh.
    let report = app.run_refresher().await;
    assert_eq!(report.due, 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_expire_together_are_paced_by_the_budget() {
    let app = spawn_with(|s| s.refresher.budget_per_second = 25.0).await;
    let connections = app.import_sellers("PACED", 200).await;
    app.run_refresher().await;
    app.fake.control().clear_requests().await;
    // All 200 enter their buffer within the same half minute (they were imported together).
    app.advance((LIFETIME_S - BUFFER_S) as f64 - 5.0).await;
    let started = std::time::Instant::now();
    let mut refreshed = 0;
    for _ in 0..5 {
        app.advance(10.0).await;
        refreshed += app.run_refresher().await.fresh;
    }
    assert_eq!(refreshed, connections.len());
    let grants = app.refresh_grants().await;
    assert_eq!(grants.len(), connections.len(), "one call each");
    // The per-app budget holds in every second at Amazon, and it was what set the pace.
    let mut per_second: HashMap<i64, usize> = HashMap::new();
    for (at, _) in &grants {
        *per_second.entry(at.div_euclid(1000)).or_default() += 1;
    }
    let budget = app.state.refresher.settings().budget_per_second as usize;
    assert!(
        per_second.values().all(|n| *n <= budget),
        "over {budget} calls in a second: {:?}",
        per_second.values().max()
    );
    assert!(
        per_second.values().any(|n| *n >= budget - 2),
        "the budget was used"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(200 / 25 - 1),
        "paced, not in one burst"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_failing_for_a_day_costs_under_fifty_attempts_and_recovers_within_one_step() {
    let app = spawn().await;
    let connections = app.import_sellers("FAILING", 1).await;
    let (id, token) = connections[0].clone();
    app.run_refresher().await;
    let control = app.fake.control();
    let fault = control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(token.clone()),
            error_500_share: 1.0,
            ..FaultSpec::default()
        })
        .await;
    control.clear_requests().await;
    // A simulated day in 5-minute steps; tenants keep vending it (503 once it expired).
    let mut unavailable = 0;
    for _ in 0..(24 * 12) {
        app.advance(300.0).await;
        app.run_refresher().await;
        for _ in 0..3 {
            let (status, body) = app.vend_json(&id).await;
            match status {
                200 => {}
                503 => {
                    assert_eq!(body["error"]["code"], "amazon_unavailable", "{body}");
                    unavailable += 1;
                }
                other => panic!("vend answered {other}: {body}"),
            }
        }
    }
    let attempts = app.refresh_grants().await.len();
    assert!(
        unavailable > 500,
        "it was unusable most of the day ({unavailable})"
    );
    assert!(attempts < 50, "{attempts} LWA attempts in a day");
    assert!(attempts >= 20, "it kept trying ({attempts} attempts)");
    let view = app.status_of(&id).await;
    assert_eq!(
        view["status"], "active",
        "a server error is not the seller's fault"
    );
    assert!(view["last_error"].as_str().unwrap().contains("500"), "{view}");

    // Amazon recovers: within one backoff step (at most an hour) it is fresh again.
    control.remove_fault(fault).await;
    let mut waited = 0;
    loop {
        app.advance(60.0).await;
        waited += 60;
        app.run_refresher().await;
        if app.vend_json(&id).await.0 == 200 {
            break;
        }
        assert!(waited <= 3600 + 60, "not recovered {waited} s after Amazon did");
    }
    assert_eq!(app.status_of(&id).await["last_error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_grant_makes_one_call_then_silence_until_the_seller_authorizes_again() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    set_webhook(&app, &receiver.url("/hooks")).await;
    let (c, _) = app.onboard_sp("na", Some("A1REVOKEDBYSELLER")).await;
    let id = c["id"].as_str().unwrap().to_owned();
    let control = app.fake.control();
    control
        .revoke(RevokeSpec {
            client_id: Some(defaults::SP_API_CLIENT_ID.into()),
            selling_partner_id: Some("A1REVOKEDBYSELLER".into()),
            ..RevokeSpec::default()
        })
        .await;
    control.clear_requests().await;
    app.advance((LIFETIME_S - BUFFER_S / 2) as f64).await;
    let report = app.run_refresher().await;
    assert_eq!((report.due, report.needs_reauth), (1, 1), "{report:?}");
    assert_eq!(app.status_of(&id).await["status"], "needs_reauth");
    deliver_until(&app, "connection.needs_reauth", || {
        !receiver.events("connection.needs_reauth").is_empty()
    })
    .await;
    // Silence: neither the refresher nor vends ask again, and no second webhook.
    for _ in 0..5 {
        app.advance(3600.0).await;
        assert_eq!(app.run_refresher().await.due, 0);
        assert_eq!(app.vend_json(&id).await.0, 409);
        lwa_server::webhooks::run_once(&app.state).await;
    }
    assert_eq!(app.refresh_grants().await.len(), 1, "one call, then silence");
    let events = receiver.events("connection.needs_reauth");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["connection"]["id"], id.as_str());

    // The seller authorizes again through a re-authorization link: active, and kept fresh.
    let r = app
        .post_json(
            &format!("/v1/connections/{id}/reauthorize-link"),
            &json!({"state": "again", "redirect_url": RETURN}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let link = r.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let landing = app
        .through_consent(&link, Choice::ApproveAs("A1REVOKEDBYSELLER".into()))
        .await;
    assert!(landing.q.contains_key("code"), "{landing:?}");
    assert_eq!(app.status_of(&id).await["status"], "active");
    deliver_until(&app, "connection.reauthorized", || {
        receiver.events("connection.reauthorized").len() == 1
    })
    .await;
    control.clear_requests().await;
    app.advance((LIFETIME_S - BUFFER_S / 2 + 60) as f64).await;
    let report = app.run_refresher().await;
    assert_eq!((report.due, report.fresh), (1, 1), "{report:?}");
    assert_eq!(app.refresh_grants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_held_secrets_are_refreshed_on_demand_only() {
    let app = spawn().await;
    let secret = "Rq8m3Xz0aB1cD2eF3gH4iJ5kL6mN7oP8qR9sT0uv";
    let link = app
        .connect_link(json!({"region": "na", "state": "s", "redirect_url": RETURN, "token_secret": secret}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    let id = r.json::<Value>().await.unwrap()["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.fake.control().clear_requests().await;
    app.advance(LIFETIME_S as f64 + 60.0).await;
    let report = app.run_refresher().await;
    assert_eq!(report.due, 0, "{report:?}");
    assert!(app.refresh_grants().await.is_empty());
    // A vend with the secret refreshes it.
    let r = app
        .http
        .post(format!("{}/v1/connections/{id}/access-token", app.url))
        .bearer_auth(&app.key)
        .header("x-amazon-token-secret", secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.refresh_grants().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_in_flight_for_a_vend_is_not_repeated_by_the_refresher() {
    let app = spawn().await;
    let connections = app.import_sellers("SHARED", 1).await;
    let (id, token) = connections[0].clone();
    app.run_refresher().await;
    let control = app.fake.control();
    control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            refresh_token: Some(token),
            latency_ms: Some(1500),
            ..FaultSpec::default()
        })
        .await;
    control.clear_requests().await;
    app.advance((LIFETIME_S - BUFFER_S / 2 + 1) as f64).await;
    let vend = {
        let (http, url, key, id) = (app.http.clone(), app.url.clone(), app.key.clone(), id.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/v1/connections/{id}/access-token"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The vend's refresh holds the connection's refresh lease: the refresher's claim skips it.
    let report = app.run_refresher().await;
    assert_eq!((report.due, report.fresh), (0, 0), "{report:?}");
    assert_eq!(vend.await.unwrap(), 200);
    assert_eq!(app.refresh_grants().await.len(), 1, "one refresh for both");
    assert_eq!(app.run_refresher().await.due, 0);
}

/// The race of a vend with its own process's refresher: the vend reads the row, the refresher
/// claims the connection (taking its refresh lease), then the vend asks for the lease. The vend
/// refreshes under the claim (the refresher joins its flight) instead of waiting for a lease its
/// own process holds to run out (30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vend_that_meets_its_own_refreshers_claim_refreshes_at_once_and_once() {
    let app = spawn().await;
    let (id, _) = app.import_sellers("OWNCLAIM", 1).await[0].clone();
    app.run_refresher().await;
    app.advance((LIFETIME_S + 1) as f64).await;
    app.fake.control().clear_requests().await;
    let (claimed, claim) = app.claim_as_refresher(&id).await;
    let started = std::time::Instant::now();
    let (status, body) = app.vend_json(&id).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the vend waited {:?} for its own process's lease",
        started.elapsed()
    );
    // The refresher goes on with its claim and finds the vend's token.
    let refreshed = app.refresher_task(&claimed).await.unwrap();
    assert_eq!(refreshed.token.expose(), body["access_token"].as_str().unwrap());
    drop(claim);
    assert_eq!(app.refresh_grants().await.len(), 1, "one refresh for both");
}

/// Two processes on one database, one connection whose token has expired, this process's
/// refresher holding its claim (stopped before its refresh), and a vend here that refreshed
/// under the claim and failed (LWA answering 500 to every try).
struct FailedUnderClaim {
    app: TestApp,
    other: lwa_server::state::AppState,
    id: String,
    claimed: lwa_store::DueRefresh,
    /// Dropped when the refresher's task is done.
    claim: Option<OwnClaim>,
    /// Refresh calls the fake had seen after the failed vend.
    grants: usize,
}

async fn failed_under_claim(prefix: &str) -> FailedUnderClaim {
    let mut captured = None;
    let app = spawn_with(|s| captured = Some(s.clone())).await;
    let other = lwa_server::open_state(&captured.unwrap(), url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let (id, _) = app.import_sellers(prefix, 1).await[0].clone();
    app.run_refresher().await;
    app.advance((LIFETIME_S + 1) as f64).await;
    let (claimed, claim) = app.claim_as_refresher(&id).await;
    let control = app.fake.control();
    let fault = control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            error_500_share: 1.0,
            ..FaultSpec::default()
        })
        .await;
    let (status, body) = app.vend_json(&id).await;
    assert_eq!(status, 503, "{body}");
    control.remove_fault(fault).await;
    let grants = app.refresh_grants().await.len();
    FailedUnderClaim {
        app,
        other,
        id,
        claimed,
        claim: Some(claim),
        grants,
    }
}

impl FailedUnderClaim {
    /// The refresher's task goes on with its claim.
    async fn refresher_task(
        &self,
    ) -> Result<std::sync::Arc<lwa_server::vend::CachedToken>, lwa_server::vend::VendError> {
        self.app.refresher_task(&self.claimed).await
    }

    /// The clock past the failure's backoff (well inside the claim's lease), followed by the
    /// other process.
    async fn past_the_backoff(&self) {
        self.app
            .advance((lwa_server::vend::BACKOFF_BASE_MS / 1000 + 1) as f64)
            .await;
        while self.other.now_ms() < self.app.state.now_ms() - 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A vend of the connection on the other process, in a task of its own.
    fn other_vend(
        &self,
    ) -> tokio::task::JoinHandle<
        Result<std::sync::Arc<lwa_server::vend::CachedToken>, lwa_server::vend::VendError>,
    > {
        let (other, tenant, id) = (self.other.clone(), self.app.tenant_id.clone(), self.id.clone());
        tokio::spawn(async move { other.vendor.access_token(&other, &tenant, &id, None, false).await })
    }
}

/// A vend that fails under its own process's refresher claim leaves the lease alone: the
/// refresher's task for the connection may still be waiting for its turn. Were the lease
/// released, another replica's vend would take it and refresh, and the refresher, acting on its
/// claim, would refresh the connection a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vend_that_fails_under_its_refreshers_claim_leaves_the_lease_to_the_refresher() {
    let failed = failed_under_claim("FAILCLAIM").await;
    failed.past_the_backoff().await;
    // Another replica's vend: the refresher still holds the lease, so it waits for its token.
    let vend = failed.other_vend();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !vend.is_finished(),
        "the other replica refreshed under the refresher's lease: {:?}",
        vend.await.unwrap().map(|t| t.expires_at_ms)
    );
    let refreshed = failed.refresher_task().await.unwrap();
    let theirs = vend.await.unwrap().unwrap();
    assert_eq!(theirs.token.expose(), refreshed.token.expose());
    assert_eq!(
        failed.app.refresh_grants().await.len() - failed.grants,
        1,
        "one refresh after the failed one"
    );
}

/// The refresher's task that comes to the connection while the vend's failure still stands
/// (its backoff) shares that failure rather than calling LWA, and then gives the lease up: the
/// next try, in any process, need not wait for the claim's two minutes to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresher_task_sharing_a_vends_failure_gives_its_lease_up() {
    let mut failed = failed_under_claim("SHAREFAIL").await;
    assert!(
        failed.refresher_task().await.is_err(),
        "the vend's failure, shared"
    );
    assert_eq!(
        failed.app.refresh_grants().await.len(),
        failed.grants,
        "no LWA call of its own"
    );
    drop(failed.claim.take());
    failed.past_the_backoff().await;
    let started = std::time::Instant::now();
    let token = failed.other_vend().await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the other replica waited {:?} for a lease nobody acts on",
        started.elapsed()
    );
    assert!(token.expires_at_ms > failed.app.state.now_ms());
    assert_eq!(
        failed.app.refresh_grants().await.len() - failed.grants,
        1,
        "one refresh after the failed one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ads_profiles_are_read_again_daily() {
    let app = spawn().await;
    let link = app
        .connect_link(json!({"api": "ads", "region": "na", "state": "a", "redirect_url": RETURN}))
        .await;
    let landing = app.through_consent(&link, Choice::Approve).await;
    let r = app
        .post_json("/v1/claims", &json!({"code": landing.q["code"]}))
        .await;
    assert_eq!(r.status(), 200);
    let control = app.fake.control();
    control.clear_requests().await;
    let profile_reads = || async {
        let mut n = 0;
        for host in [
            "advertising-api.amazon.com",
            "advertising-api-eu.amazon.com",
            "advertising-api-fe.amazon.com",
        ] {
            n += control
                .requests(Some(host))
                .await
                .iter()
                .filter(|r| r.path == "/v2/profiles")
                .count();
        }
        n
    };
    // The first pass only schedules it (onboarding just read them).
    assert_eq!(app.run_refresher().await.profiles_read, 0);
    app.advance(3600.0 * 12.0).await;
    assert_eq!(app.run_refresher().await.profiles_read, 0);
    assert_eq!(profile_reads().await, 0);
    app.advance(3600.0 * 14.0).await;
    assert_eq!(app.run_refresher().await.profiles_read, 1);
    assert_eq!(profile_reads().await, 3, "one read per regional host");
    assert_eq!(app.run_refresher().await.profiles_read, 0, "next one a day later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorizations_nearing_a_year_are_announced_at_thirty_and_seven_days() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    set_webhook(&app, &receiver.url("/hooks")).await;
    let (c, _) = app.onboard_sp("na", Some("A1AGINGSELLER")).await;
    let id = c["id"].as_str().unwrap();
    let day = 86_400.0;
    // Kept fresh all along by the refresher; the notices come at 335 and 358 days.
    app.advance(334.0 * day).await;
    assert_eq!(app.run_refresher().await.expiry_notices, 0);
    app.advance(day + 60.0).await;
    assert_eq!(app.run_refresher().await.expiry_notices, 1);
    assert_eq!(app.run_refresher().await.expiry_notices, 0, "once");
    app.advance(22.0 * day).await;
    assert_eq!(app.run_refresher().await.expiry_notices, 0);
    app.advance(day).await;
    assert_eq!(app.run_refresher().await.expiry_notices, 1);
    app.advance(day).await;
    assert_eq!(app.run_refresher().await.expiry_notices, 0);
    assert_eq!(app.status_of(id).await["status"], "active");
    let kind = "connection.refresh_token_expiring";
    deliver_until(&app, kind, || receiver.events(kind).len() >= 2).await;
    let events = receiver.events(kind);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["data"]["notice_days"], 30);
    assert_eq!(events[0]["data"]["days_left"], 29);
    assert_eq!(events[1]["data"]["notice_days"], 7);
    assert_eq!(events[1]["data"]["days_left"], 6);
    assert_eq!(events[1]["connection"]["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_in_serve_refreshes_without_being_asked() {
    let app = spawn_with(|s| s.refresher.enabled = true).await;
    let connections = app.import_sellers("LOOP", 3).await;
    app.fake.control().clear_requests().await;
    app.advance((LIFETIME_S - BUFFER_S / 2 + 5) as f64).await;
    // Nobody vends and nobody calls run_once: the loop (every second) refreshes all three.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let refreshed = app.refresh_grants().await.len();
        if refreshed == connections.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the loop refreshed {refreshed} of {}",
            connections.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (id, _) in &connections {
        let (status, body) = app.vend_json(id).await;
        assert_eq!(status, 200);
        assert!(body["expires_in"].as_i64().unwrap() > LIFETIME_S - 60, "{body}");
    }
    assert_eq!(
        app.refresh_grants().await.len(),
        connections.len(),
        "vends found them fresh"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secrets_nearing_180_days_warn_the_operator_at_30_and_7_days() {
    let receiver = Receiver::start().await;
    let operator_url = receiver.url("/operator");
    let app = spawn_with(|s| {
        s.operator_webhook_url = Some(operator_url.clone());
        s.operator_webhook_secret = Some(lwa_server::webhooks::SigningSecret::new(
            "OperatorSigningSecret-0123456789abcdefghij",
        ));
    })
    .await;
    let day = 86_400.0;
    app.run_refresher().await;
    app.advance(149.0 * day).await;
    assert_eq!(app.run_refresher().await.secret_warnings, 0);
    app.advance(day + 60.0).await;
    assert_eq!(app.run_refresher().await.secret_warnings, 1);
    app.advance(60.0).await;
    assert_eq!(app.run_refresher().await.secret_warnings, 0, "once");
    app.advance(23.0 * day).await;
    assert_eq!(app.run_refresher().await.secret_warnings, 1);
    let kind = "app.client_secret_expiring";
    deliver_until(&app, kind, || receiver.events(kind).len() >= 2).await;
    let events = receiver.events(kind);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(
        (
            &events[0]["data"]["threshold_days"],
            &events[0]["data"]["days_left"]
        ),
        (&json!(30), &json!(29))
    );
    assert_eq!(events[1]["data"]["threshold_days"], 7);
    assert_eq!(events[1]["data"]["client_id"], defaults::SP_API_CLIENT_ID);
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("webhook-id").starts_with("evt_")),
        "signed deliveries with stable ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_whose_amazon_deadline_is_sooner_warns_by_amazons_date() {
    let app = spawn().await;
    let token = lwa_server::operator::create_admin_token(&app.state)
        .await
        .unwrap();
    // The notification arrives late: Amazon says the new secret expires in 40 days.
    let now = app.state.now_ms();
    let expires = lwa_server::time::rfc3339(now + 40 * 86_400_000);
    let body = json!({
        "notificationVersion": "1.0",
        "notificationType": "APPLICATION_OAUTH_CLIENT_NEW_SECRET",
        "payload": {"applicationOAuthClientNewSecret": {
            "clientId": defaults::SP_API_CLIENT_ID,
            "newClientSecret": "amzn1.oa2-cs.v1.0123456789abcdef-late-notice",
            "newClientSecretExpiryTime": expires,
            "oldClientSecretExpiryTime": lwa_server::time::rfc3339(now + 7 * 86_400_000),
        }},
    });
    let r = app
        .http
        .post(format!("{}/admin/api/app-secret-notifications", app.url))
        .bearer_auth(token.as_str())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    app.advance(9.0 * 86_400.0).await;
    assert_eq!(app.run_refresher().await.secret_warnings, 0, "31 days left");
    app.advance(86_400.0 + 60.0).await;
    assert_eq!(
        app.run_refresher().await.secret_warnings,
        1,
        "30 days before Amazon's date, not 180 days after the broker got it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_database_refresh_each_connection_once() {
    let mut captured = None;
    let app = spawn_with(|s| {
        s.refresher.budget_per_second = 10_000.0;
        captured = Some(s.clone());
    })
    .await;
    let other = lwa_server::open_state(&captured.unwrap(), url::Url::parse(&app.url).unwrap())
        .await
        .unwrap();
    let connections = app.import_sellers("TWICE", 200).await;
    app.run_refresher().await;
    let control = app.fake.control();
    control
        .add_fault(FaultSpec {
            target: FaultTarget::Lwa,
            latency_ms: Some(100),
            ..FaultSpec::default()
        })
        .await;
    app.advance((LIFETIME_S - BUFFER_S / 2 + 5) as f64).await;
    // The second process follows the fake's clock on its own.
    while other.now_ms() < app.state.now_ms() - 50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    control.clear_requests().await;
    let counted = control.counters().await.lwa_calls("refresh_token");
    let (a, b) = tokio::join!(
        app.state.refresher.run_once(&app.state),
        other.refresher.run_once(&other)
    );
    assert_eq!(a.fresh + b.fresh, connections.len(), "{a:?} {b:?}");
    assert!(a.fresh > 0 && b.fresh > 0, "both took part: {a:?} {b:?}");
    assert_eq!(
        control.counters().await.lwa_calls("refresh_token") - counted,
        connections.len() as u64,
        "one LWA call per connection"
    );
}
