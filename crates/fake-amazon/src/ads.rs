//! The Amazon Ads API hosts: profiles and AMC (AMAZON.md §4).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::faults::{self, FaultQuery, Injected};
use crate::hosts::{self, HostKind};
use crate::http::{Ctx, FaultMarker, json as json_response, json_typed, set_header};
use crate::ids;
use crate::model::{Advertiser, AppKind, FaultTarget, Principal, Profile, Region};
use crate::state::Throttle;

const AMC_EXECUTION_TYPE: &str = "application/vnd.amcworkflowexecutions.v1+json";
const SP_CAMPAIGN_TYPE: &str = "application/vnd.spCampaign.v3+json";

/// An Ads error answer.
#[derive(Debug, Clone)]
struct AdsError {
    status: StatusCode,
    code: String,
    details: String,
    retry_after: Option<u64>,
}

impl AdsError {
    fn new(status: StatusCode, code: &str, details: impl Into<String>) -> AdsError {
        AdsError {
            status,
            code: code.to_owned(),
            details: details.into(),
            retry_after: None,
        }
    }

    fn unauthorized(details: &str) -> AdsError {
        AdsError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", details)
    }

    fn bad_request(details: impl Into<String>) -> AdsError {
        AdsError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", details)
    }

    fn throttled(seconds: f64) -> AdsError {
        AdsError {
            retry_after: Some(seconds.ceil().max(1.0) as u64),
            ..AdsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "Too Many Requests",
            )
        }
    }
}

fn error_response(ctx: &Ctx, e: &AdsError) -> Response {
    let mut resp = json_response(
        e.status,
        &json!({"code": e.code, "details": e.details, "requestId": ctx.request_id}),
    );
    if let Some(secs) = e.retry_after {
        set_header(&mut resp, "retry-after", &secs.to_string());
    }
    resp
}

/// Handles a request to an Ads host.
pub async fn handle(ctx: Ctx) -> Response {
    let HostKind::Ads(region) = ctx.kind else {
        return error_response(
            &ctx,
            &AdsError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found"),
        );
    };
    let token = ctx.header_nonempty("authorization").and_then(|v| {
        v.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
            .then(|| v.get(7..).unwrap_or("").trim().to_owned())
            .filter(|t| !t.is_empty())
    });
    let record = token
        .as_deref()
        .and_then(|t| ctx.shared.inner.lock().access_tokens.get(t).cloned());
    let client_header = ctx
        .header_nonempty("amazon-advertising-api-clientid")
        .map(str::to_owned);
    let injected = faults::check(
        &ctx.shared,
        FaultQuery {
            target: FaultTarget::Api,
            host: &ctx.host,
            path: &ctx.path,
            client_id: record
                .as_ref()
                .map(|r| r.client_id.as_str())
                .or(client_header.as_deref()),
            refresh_token: None,
        },
    )
    .await;
    match injected {
        Some(Injected::Drop) => return faults::drop_connection(&ctx, true).await,
        Some(Injected::Fail { status, error }) => {
            let status_code = crate::http::status(status);
            let (code, details) = match status {
                429 => ("TOO_MANY_REQUESTS", "Too Many Requests"),
                503 => ("SERVICE_UNAVAILABLE", "Service Unavailable"),
                401 => ("UNAUTHORIZED", "Not authorized to access this advertiser"),
                _ => ("INTERNAL_ERROR", "Internal Server Error"),
            };
            let mut e = AdsError::new(status_code, error.as_deref().unwrap_or(code), details);
            if status == 429 {
                e.retry_after = Some(1);
            }
            let mut resp = error_response(&ctx, &e);
            resp.extensions_mut().insert(FaultMarker);
            return resp;
        }
        None => {}
    }

    let path = ctx.path.clone();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let payload = (ctx.method == Method::GET)
        .then(|| ctx.shared.inner.lock().payload(&ctx.host, &ctx.path))
        .flatten();
    let operation = match (ctx.method.clone(), segs.as_slice()) {
        _ if payload.is_some() => crate::payload::OPERATION,
        (Method::GET, ["v2", "profiles"]) => "getProfiles",
        (Method::POST, ["sp", "campaigns", "list"]) => "listSponsoredProductsCampaigns",
        (Method::GET, ["amc", "accounts"]) => "listAmcAccounts",
        (Method::POST, ["amc", "reporting", _, "workflowExecutions"]) => "createWorkflowExecution",
        (Method::GET, ["amc", "reporting", _, "workflowExecutions", _]) => "getWorkflowExecution",
        _ => {
            return error_response(
                &ctx,
                &AdsError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found"),
            );
        }
    };

    let now = ctx.now();
    let advertiser = match authenticate(&ctx, token.is_some(), record, client_header.as_deref(), now) {
        Ok(a) => a,
        Err(e) => return error_response(&ctx, &e),
    };
    let throttle = ctx
        .shared
        .inner
        .lock()
        .throttle(operation, &advertiser.advertiser_id, now);
    if let Throttle::Throttled(secs) = throttle {
        return error_response(&ctx, &AdsError::throttled(secs));
    }
    if let Some(payload) = &payload {
        return crate::payload::response(payload);
    }
    let result = match operation {
        "getProfiles" => Ok(profiles(&advertiser, region)),
        "listSponsoredProductsCampaigns" => list_sp_campaigns(&ctx, &advertiser, region),
        "listAmcAccounts" => Ok(amc_accounts(&advertiser)),
        "createWorkflowExecution" => create_execution(&ctx, &advertiser, segs[2], now),
        _ => get_execution(&ctx, &advertiser, segs[2], segs[4]),
    };
    match result {
        Ok(resp) => resp,
        Err(e) => error_response(&ctx, &e),
    }
}

/// Checks the bearer token and client id header; returns the token's advertiser.
fn authenticate(
    ctx: &Ctx,
    has_token: bool,
    record: Option<crate::state::AccessRecord>,
    client_header: Option<&str>,
    now: i64,
) -> Result<Advertiser, AdsError> {
    if !has_token {
        return Err(AdsError::unauthorized(
            "Missing Authorization header with a Bearer token",
        ));
    }
    let Some(client_header) = client_header else {
        return Err(AdsError::unauthorized(
            "Missing Amazon-Advertising-API-ClientId header",
        ));
    };
    let record = record
        .filter(|r| !r.revoked && r.rdt.is_none())
        .ok_or_else(|| AdsError::unauthorized("Invalid or revoked access token"))?;
    if now >= record.expires_ms {
        return Err(AdsError::unauthorized("Access token has expired"));
    }
    let inner = ctx.shared.inner.lock();
    let is_ads = inner
        .apps
        .get(&record.client_id)
        .is_some_and(|a| a.kind == AppKind::Ads);
    if !is_ads || record.client_id != client_header {
        return Err(AdsError::unauthorized("Not authorized to access this advertiser"));
    }
    let Principal::Advertiser { advertiser_id } = &record.principal else {
        return Err(AdsError::unauthorized("Not authorized to access this advertiser"));
    };
    inner
        .advertisers
        .get(advertiser_id)
        .cloned()
        .ok_or_else(|| AdsError::unauthorized("Not authorized to access this advertiser"))
}

/// The advertiser's profiles in `region` (those `GET /v2/profiles` lists on its host).
fn profiles_in(advertiser: &Advertiser, region: Region) -> Vec<&Profile> {
    advertiser
        .profiles
        .iter()
        .filter(|p| {
            hosts::marketplace(&p.account_info.marketplace_string_id)
                .or_else(|| hosts::marketplace_by_country(&p.country_code))
                .is_some_and(|m| m.region == region)
        })
        .collect()
}

fn profiles(advertiser: &Advertiser, region: Region) -> Response {
    json_response(StatusCode::OK, &profiles_in(advertiser, region))
}

/// Checks `Amazon-Advertising-API-Scope`: present (400), and one of the advertiser's profiles in
/// the host's region (401, as a profile used on another region's host).
fn scoped_profile<'a>(
    ctx: &Ctx,
    advertiser: &'a Advertiser,
    region: Region,
) -> Result<&'a Profile, AdsError> {
    let scope = ctx
        .header_nonempty("amazon-advertising-api-scope")
        .ok_or_else(|| AdsError::bad_request("Missing required header Amazon-Advertising-API-Scope"))?;
    scope
        .parse::<i64>()
        .ok()
        .and_then(|id| {
            profiles_in(advertiser, region)
                .into_iter()
                .find(|p| p.profile_id == id)
        })
        .ok_or_else(|| AdsError::unauthorized("Not authorized to access this advertiser"))
}

/// `POST /sp/campaigns/list`: two fixed campaigns per profile, filtered and capped by the body.
fn list_sp_campaigns(ctx: &Ctx, advertiser: &Advertiser, region: Region) -> Result<Response, AdsError> {
    let profile = scoped_profile(ctx, advertiser, region)?;
    let content_type = ctx
        .header("content-type")
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if let Some(c) = &content_type
        && c != "application/json"
        && !c.eq_ignore_ascii_case(SP_CAMPAIGN_TYPE)
    {
        return Err(AdsError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            format!("Content-Type {c} is not supported; use {SP_CAMPAIGN_TYPE}"),
        ));
    }
    let body: Value = if ctx.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&ctx.body)
            .map_err(|_| AdsError::bad_request("Request body is not valid JSON"))?
    };
    if !body.is_object() {
        return Err(AdsError::bad_request("Request body must be a JSON object"));
    }
    let max_results = match body.get("maxResults") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n @ 1..=5000) => Some(n as usize),
            _ => {
                return Err(AdsError::bad_request(
                    "maxResults must be an integer between 1 and 5000",
                ));
            }
        },
    };
    let states: Option<Vec<String>> = match body.pointer("/stateFilter/include") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| i.as_str().map(str::to_ascii_uppercase))
                .collect::<Option<_>>()
                .ok_or_else(|| AdsError::bad_request("stateFilter.include must list states"))?,
        ),
        Some(_) => return Err(AdsError::bad_request("stateFilter.include must be an array")),
    };
    let id = profile.profile_id;
    let all = [
        json!({
            "campaignId": format!("{id}1"),
            "name": format!("Fake SP campaign {id} A"),
            "campaignType": "SPONSORED_PRODUCTS",
            "targetingType": "MANUAL",
            "state": "ENABLED",
            "startDate": "2024-01-01",
            "budget": {"budgetType": "DAILY", "budget": 10.0},
            "dynamicBidding": {"strategy": "LEGACY_FOR_SALES", "placementBidding": []},
            "tags": {},
        }),
        json!({
            "campaignId": format!("{id}2"),
            "name": format!("Fake SP campaign {id} B"),
            "campaignType": "SPONSORED_PRODUCTS",
            "targetingType": "AUTO",
            "state": "PAUSED",
            "startDate": "2024-02-01",
            "budget": {"budgetType": "DAILY", "budget": 25.5},
            "dynamicBidding": {"strategy": "AUTO_FOR_SALES", "placementBidding": []},
            "tags": {},
        }),
    ];
    let matching: Vec<Value> = all
        .into_iter()
        .filter(|c| {
            states
                .as_ref()
                .is_none_or(|s| s.iter().any(|state| c["state"].as_str() == Some(state.as_str())))
        })
        .collect();
    let total = matching.len();
    let campaigns: Vec<Value> = matching
        .into_iter()
        .take(max_results.unwrap_or(usize::MAX))
        .collect();
    Ok(json_typed(
        StatusCode::OK,
        SP_CAMPAIGN_TYPE,
        &json!({"campaigns": campaigns, "totalResults": total}),
    ))
}

fn amc_accounts(advertiser: &Advertiser) -> Response {
    let accounts: Vec<Value> = advertiser
        .amc_instances
        .iter()
        .map(|i| {
            json!({"accountId": i.advertiser_id, "accountName": advertiser.name, "marketplaceId": i.marketplace_id})
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "amcAccounts": accounts }))
}

/// Checks the AMC headers and that the instance belongs to them.
fn amc_instance(
    ctx: &Ctx,
    advertiser: &Advertiser,
    instance_id: &str,
) -> Result<crate::model::AmcInstance, AdsError> {
    let marketplace = ctx
        .header_nonempty("amazon-advertising-api-marketplaceid")
        .ok_or_else(|| {
            AdsError::bad_request("Missing required header Amazon-Advertising-API-MarketplaceId")
        })?;
    let amc_advertiser = ctx
        .header_nonempty("amazon-advertising-api-advertiserid")
        .ok_or_else(|| {
            AdsError::bad_request("Missing required header Amazon-Advertising-API-AdvertiserId")
        })?;
    let instance = advertiser
        .amc_instances
        .iter()
        .find(|i| i.instance_id == instance_id)
        .cloned();
    let Some(instance) = instance else {
        let exists = ctx
            .shared
            .inner
            .lock()
            .advertisers
            .values()
            .any(|a| a.amc_instances.iter().any(|i| i.instance_id == instance_id));
        return Err(if exists {
            AdsError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "Not authorized to access this instance",
            )
        } else {
            AdsError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("Instance {instance_id} not found"),
            )
        });
    };
    if instance.advertiser_id != amc_advertiser {
        return Err(AdsError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("Advertiser {amc_advertiser} is not authorized to access instance {instance_id}"),
        ));
    }
    if instance.marketplace_id != marketplace {
        return Err(AdsError::bad_request(format!(
            "Marketplace {marketplace} does not match instance {instance_id}"
        )));
    }
    Ok(instance)
}

fn create_execution(
    ctx: &Ctx,
    advertiser: &Advertiser,
    instance_id: &str,
    now: i64,
) -> Result<Response, AdsError> {
    let instance = amc_instance(ctx, advertiser, instance_id)?;
    let body: Value = serde_json::from_slice(&ctx.body)
        .map_err(|_| AdsError::bad_request("Request body is not valid JSON"))?;
    let workflow_id = body
        .get("workflowId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let sql = body
        .pointer("/workflow/sqlQuery")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty());
    let workflow_id = match (workflow_id, sql) {
        (Some(id), _) => id.to_owned(),
        (None, Some(_)) => format!("ad-hoc-{}", ids::uuid()),
        (None, None) => {
            return Err(AdsError::bad_request(
                "Either workflowId or workflow.sqlQuery is required",
            ));
        }
    };
    let day = 86_400_000;
    let today = now - now.rem_euclid(day);
    let window_type = body
        .get("timeWindowType")
        .and_then(Value::as_str)
        .unwrap_or("MOST_RECENT_DAY");
    let (start, end) = match window_type {
        "EXPLICIT" => {
            let start = body.get("timeWindowStart").and_then(Value::as_str);
            let end = body.get("timeWindowEnd").and_then(Value::as_str);
            match (start, end) {
                (Some(s), Some(e)) => (s.to_owned(), e.to_owned()),
                _ => {
                    return Err(AdsError::bad_request(
                        "timeWindowStart and timeWindowEnd are required for EXPLICIT",
                    ));
                }
            }
        }
        "MOST_RECENT_WEEK" => (ids::iso8601_local(today - 7 * day), ids::iso8601_local(today)),
        "CURRENT_MONTH" | "PREVIOUS_MONTH" | "MOST_RECENT_DAY" => {
            (ids::iso8601_local(today - day), ids::iso8601_local(today))
        }
        other => {
            return Err(AdsError::bad_request(format!(
                "Unsupported timeWindowType {other}"
            )));
        }
    };
    let zone = body
        .get("timeWindowTimeZone")
        .and_then(Value::as_str)
        .unwrap_or("America/New_York");
    let execution_id = ids::uuid();
    let execution = json!({
        "createTime": ids::iso8601_ms(now),
        "dataGaps": [],
        "disableAggregationControls": false,
        "executionCategory": "AD_HOC",
        "expireTime": ids::iso8601_ms(now + 30 * day),
        "ignoreDataGaps": body.get("ignoreDataGaps").and_then(Value::as_bool).unwrap_or(false),
        "lastUpdatedTime": ids::iso8601_ms(now),
        "parameterValues": body.get("parameterValues").cloned().unwrap_or_else(|| json!({})),
        "status": "PENDING",
        "timeWindowEnd": end,
        "timeWindowEndOriginal": end,
        "timeWindowStart": start,
        "timeWindowStartOriginal": start,
        "timeWindowTimeZoneOriginal": zone,
        "waitUntil": null,
        "workflowExecutionId": execution_id,
        "workflowExecutionTimeoutSeconds": 21600,
        "workflowId": workflow_id,
    });
    ctx.shared
        .inner
        .lock()
        .amc_executions
        .insert((instance.instance_id, execution_id), execution.clone());
    Ok(json_typed(StatusCode::OK, AMC_EXECUTION_TYPE, &execution))
}

fn get_execution(
    ctx: &Ctx,
    advertiser: &Advertiser,
    instance_id: &str,
    execution_id: &str,
) -> Result<Response, AdsError> {
    let instance = amc_instance(ctx, advertiser, instance_id)?;
    let found = ctx
        .shared
        .inner
        .lock()
        .amc_executions
        .get(&(instance.instance_id, execution_id.to_owned()))
        .cloned();
    match found {
        Some(e) => Ok(json_typed(StatusCode::OK, AMC_EXECUTION_TYPE, &e)),
        None => Err(AdsError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("Workflow execution {execution_id} not found"),
        )),
    }
}
