//! `GET /auth/redirect`: Amazon's callback. Exchanges the code, creates or updates the
//! connection, and sends the seller back to the tenant with a claim code (or an error).
//! An unknown, used or expired state gets an error page, never a redirect.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use lwa::{Api, AuthorizationCode, CodeVerifier, LwaError, Region};
use lwa_store::{ClaimCode, OAuthState};
use serde_json::{Value, json};

use super::{CLAIM_TTL_MS, query_map, redirect, with_query};
use crate::config::AppConfig;
use crate::error::{ApiError, Shape};
use crate::ids;
use crate::sealing::TokenSecret;
use crate::state::AppState;
use crate::webhooks::{self, EventType};

fn page(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, "authorization_failed", message)
        .shape(Shape::Html)
        .into_response()
}

fn back_with_error(flow: &OAuthState, error: &str, description: &str) -> Response {
    redirect(&with_query(
        &flow.redirect_url,
        &[
            ("state", &flow.client_state),
            ("tenant_id", &flow.tenant_id),
            ("error", error),
            ("error_description", description),
        ],
    ))
}

/// The handler.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn callback(State(state): State<AppState>, uri: Uri) -> Response {
    let q = query_map(uri.query());
    let Some(broker_state) = q.get("state").filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "This page is where Amazon sends you back after you authorize, and the request has no state. \
             Start the connection again from the application you came from.",
        );
    };
    let state_hash = ids::hash(broker_state);
    let now = state.now_ms();
    let flow = match state.store.take_oauth_state(&state_hash, now).await {
        Ok(Some(flow)) => flow,
        Ok(None) => {
            let known = matches!(state.store.oauth_state(&state_hash).await, Ok(Some(_)));
            return page(
                StatusCode::BAD_REQUEST,
                if known {
                    "This authorization was already completed: each authorization link works once. \
                     Start the connection again from the application you came from."
                } else {
                    "This authorization is unknown to the broker. Start the connection again from the \
                     application you came from."
                },
            );
        }
        Err(e) => return ApiError::from(e).shape(Shape::Html).into_response(),
    };
    if flow.expires_at_ms <= now {
        return page(
            StatusCode::BAD_REQUEST,
            "This authorization started more than 10 minutes ago and has expired. Start the connection \
             again from the application you came from.",
        );
    }
    if let Some(error) = q.get("error").filter(|e| !e.is_empty()) {
        let description = q
            .get("error_description")
            .map(String::as_str)
            .filter(|d| !d.is_empty())
            .unwrap_or("The authorization was not granted");
        return back_with_error(&flow, error, description);
    }
    match complete(&state, &flow, &q).await {
        Ok((connection_id, code)) => redirect(&with_query(
            &flow.redirect_url,
            &[
                ("state", &flow.client_state),
                ("tenant_id", &flow.tenant_id),
                ("seller_id", &connection_id),
                ("code", &code),
            ],
        )),
        Err(Failure::Tenant(error, description)) => back_with_error(&flow, error, &description),
        Err(Failure::Internal(e)) => {
            let _ = e.into_response();
            back_with_error(
                &flow,
                "server_error",
                "The broker could not store the authorization; try again",
            )
        }
    }
}

enum Failure {
    /// Reported to the tenant's redirect URL.
    Tenant(&'static str, String),
    Internal(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        Failure::Internal(e)
    }
}

impl From<lwa_store::StoreError> for Failure {
    fn from(e: lwa_store::StoreError) -> Failure {
        Failure::Internal(e.into())
    }
}

async fn complete(
    state: &AppState,
    flow: &OAuthState,
    q: &std::collections::HashMap<String, String>,
) -> Result<(String, String), Failure> {
    let Some(app) = state.app(&flow.app).cloned() else {
        return Err(Failure::Tenant(
            "server_error",
            format!("the app {:?} is no longer configured", flow.app),
        ));
    };
    let region = Region::parse(&flow.region).map_err(|e| ApiError::internal("stored region", e))?;
    let code_param = if app.kind == Api::SpApi {
        "spapi_oauth_code"
    } else {
        "code"
    };
    let Some(code) = q.get(code_param).filter(|c| !c.is_empty()) else {
        return Err(Failure::Tenant(
            "invalid_request",
            "Amazon's callback carried no authorization code".into(),
        ));
    };
    let selling_partner_id = q.get("selling_partner_id").filter(|s| !s.is_empty()).cloned();
    if app.kind == Api::SpApi && selling_partner_id.is_none() {
        return Err(Failure::Tenant(
            "invalid_request",
            "Amazon's callback carried no selling_partner_id".into(),
        ));
    }
    let secret = match &flow.token_secret {
        None => None,
        Some(sealed) => {
            let opened = state
                .sealer
                .open(&flow.state_hash, "token_secret", sealed, None)
                .map_err(|e| ApiError::internal("opening a flow's token secret", e))?;
            TokenSecret::parse(&opened)
        }
    };
    let verifier = match &flow.code_verifier {
        None => None,
        Some(sealed) => Some(CodeVerifier::new(
            state
                .sealer
                .open(&flow.state_hash, "code_verifier", sealed, None)
                .map_err(|e| ApiError::internal("opening a flow's PKCE verifier", e))?
                .as_str(),
        )),
    };

    let redirect_uri = state.redirect_uri(&app);
    let tokens = state
        .lwa
        .exchange_code(
            state.token_host(&app, region),
            &state.credentials(&app).await,
            &AuthorizationCode::new(code.as_str()),
            Some(&redirect_uri),
            verifier.as_ref(),
        )
        .await;
    let tokens = tokens.map_err(exchange_failure)?;
    let Some(refresh_token) = tokens.refresh_token.clone() else {
        return Err(Failure::Tenant(
            "server_error",
            "Amazon returned no refresh token".into(),
        ));
    };
    let profiles = if app.kind == Api::Ads {
        ads_profiles(state, &app, tokens.access_token.expose()).await
    } else {
        Value::Array(vec![])
    };

    // Which connection: the one being re-authorized, the same selling partner's, or a new one.
    let now = state.now_ms();
    let existing = match (&flow.connection_id, &selling_partner_id) {
        (Some(id), _) => {
            let found = state
                .store
                .connection(id)
                .await?
                .filter(|c| c.tenant_id == flow.tenant_id);
            let Some(found) = found else {
                return Err(Failure::Tenant(
                    "invalid_request",
                    "the connection to re-authorize no longer exists".into(),
                ));
            };
            if let (Some(old), Some(new)) = (&found.selling_partner_id, &selling_partner_id)
                && old != new
            {
                return Err(Failure::Tenant(
                    "wrong_account",
                    format!("this link re-authorizes selling partner {old}, but {new} signed in"),
                ));
            }
            Some(found)
        }
        (None, Some(spid)) => {
            state
                .store
                .connection_by_partner(&flow.tenant_id, &app.name, region.as_str(), spid)
                .await?
        }
        (None, None) => None,
    };
    let is_new = existing.is_none();
    let previous_status = existing.as_ref().map(|c| c.status.clone());
    let mut connection = existing.unwrap_or_else(|| {
        let mut c = crate::connections::new_connection(&flow.tenant_id, &app, region, now);
        c.account_type = flow.account_type.clone();
        c.marketplace_id = flow.marketplace_id.clone();
        c.selling_partner_id = selling_partner_id.clone();
        c
    });
    let id = connection.id.clone();
    crate::connections::store_tokens(
        state,
        &mut connection,
        &refresh_token,
        &tokens,
        secret.as_ref(),
        now,
    );
    connection.authorized_at_ms = now;
    if app.kind == Api::Ads {
        connection.profiles = profiles.to_string();
    }
    if flow.marketplace_id.is_some() {
        connection.marketplace_id = flow.marketplace_id.clone();
    }
    if !is_new && flow.account_type.is_some() {
        connection.account_type = flow.account_type.clone();
    }

    let code = ids::new_secret();
    let code_hash = ids::hash(&code);
    let claim = ClaimCode {
        token_secret: secret
            .as_ref()
            .map(|s| state.sealer.seal(&code_hash, "token_secret", s.expose(), None)),
        code_hash,
        tenant_id: flow.tenant_id.clone(),
        connection_id: id.clone(),
        created_at_ms: now,
        expires_at_ms: now + CLAIM_TTL_MS,
        used_at_ms: None,
    };
    let (kind, data) = if is_new {
        (EventType::ConnectionAuthorized, json!({"origin": flow.origin}))
    } else {
        (
            EventType::ConnectionReauthorized,
            json!({"origin": flow.origin, "previous_status": previous_status}),
        )
    };
    let events = webhooks::connection_event(state, kind, &connection, data);
    state
        .store
        .save_authorization(&connection, is_new, &claim, &events)
        .await?;
    state.webhooks.wake();
    state.vendor.forget(&id);
    tracing::info!(connection = %id, tenant = %flow.tenant_id, new = is_new, origin = %flow.origin, "authorization stored");
    Ok((id, code))
}

fn exchange_failure(error: LwaError) -> Failure {
    tracing::warn!(error = %error, "authorization code exchange failed");
    match error {
        LwaError::Reauthorize { .. } => Failure::Tenant(
            "invalid_grant",
            "Amazon did not accept the authorization code (expired, used, or issued for another app)".into(),
        ),
        LwaError::Configuration { code, .. } => Failure::Tenant(
            "server_error",
            format!("Amazon refused the broker's app configuration ({code})"),
        ),
        _ => Failure::Tenant(
            "temporarily_unavailable",
            "Amazon could not be reached; try again".into(),
        ),
    }
}

/// Every profile of the advertiser, from all three regional hosts (`GET /v2/profiles` answers
/// only its own region's), each tagged with its region. A host that fails is skipped.
async fn ads_profiles(state: &AppState, app: &AppConfig, access_token: &str) -> Value {
    read_ads_profiles(state, app, access_token, false)
        .await
        .unwrap_or_else(|| Value::Array(Vec::new()))
}

/// [`ads_profiles`], or `None` when no host answered — or, with `every_host`, when any host
/// failed (so a daily re-read keeps the list it has rather than a partial one). Each host gets
/// 10 s.
pub(crate) async fn read_ads_profiles(
    state: &AppState,
    app: &AppConfig,
    access_token: &str,
    every_host: bool,
) -> Option<Value> {
    let mut all = Vec::new();
    let (mut answered, mut failed) = (false, false);
    for region in Region::ALL {
        let url = state.endpoints.url(region.ads_api_host(), "/v2/profiles");
        let response = state
            .lwa
            .http()
            .get(&url)
            .header("Authorization", format!("Bearer {access_token}"))
            .header("Amazon-Advertising-API-ClientId", &app.credentials.client_id)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => {
                answered = true;
                if let Ok(Value::Array(profiles)) = r.json::<Value>().await {
                    for mut p in profiles {
                        if let Value::Object(map) = &mut p {
                            map.insert("region".into(), json!(region.as_str()));
                        }
                        all.push(p);
                    }
                }
            }
            Ok(r) => {
                failed = true;
                tracing::warn!(
                    status = r.status().as_u16(),
                    region = region.as_str(),
                    "reading Ads profiles failed"
                );
            }
            Err(e) => {
                failed = true;
                tracing::warn!(error = %e.without_url(), region = region.as_str(), "reading Ads profiles failed");
            }
        }
    }
    (answered && !(every_host && failed)).then_some(Value::Array(all))
}
