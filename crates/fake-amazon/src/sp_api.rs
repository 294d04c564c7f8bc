//! The Selling Partner API hosts and their sandboxes (AMAZON.md §3).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use crate::faults::{self, FaultQuery, Injected};
use crate::hosts::{self, HostKind};
use crate::http::{Ctx, FaultMarker, json as json_response, response, set_header};
use crate::ids;
use crate::model::{AppKind, FaultTarget, Principal, Region};
use crate::sandbox::{SandboxAnswer, match_template, segments};
use crate::state::{AccessRecord, RDT_TTL_SECS, RdtResource, Throttle};

const DENIED: &str = "Access to requested resource is denied.";
const NOTIFICATIONS_SCOPE: &str = "sellingpartnerapi::notifications";
const ROTATION_SCOPE: &str = "sellingpartnerapi::client_credential:rotation";

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A seller's LWA access token (not an RDT).
    Seller,
    /// A seller's access token, or an RDT covering the path.
    SellerOrRdt,
    /// Only an RDT covering the path.
    Restricted,
    /// A grantless token with this scope.
    Grantless(&'static str),
}

/// An SP-API error answer.
#[derive(Debug, Clone)]
struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    details: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: &str, details: Option<&str>) -> ApiError {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            details: details.map(str::to_owned),
        }
    }

    fn unauthorized(details: Option<&str>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Unauthorized", DENIED, details)
    }

    fn invalid_input(message: &str) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidInput", message, None)
    }

    fn not_found(message: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NotFound", message, None)
    }
}

/// `x-amzn-ErrorType` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "InvalidInputException",
        403 => "AccessDeniedException",
        404 => "NotFoundException",
        409 => "ConflictException",
        413 => "RequestEntityTooLargeException",
        429 => "QuotaExceededException",
        503 => "ServiceUnavailableException",
        _ => "InternalFailure",
    }
}

/// The SP-API error shape with its headers; the rate header only on 400 and 404.
fn error_response(ctx: &Ctx, e: &ApiError, rate: Option<f64>) -> Response {
    let mut error = json!({"code": e.code, "message": e.message});
    if let Some(d) = &e.details {
        error["details"] = json!(d);
    }
    let mut resp = json_response(e.status, &json!({ "errors": [error] }));
    set_header(
        &mut resp,
        "x-amzn-ErrorType",
        &format!(
            "{}:http://internal.amazon.com/coral/com.amazon.coral.service/",
            error_type(e.status)
        ),
    );
    if matches!(e.status.as_u16(), 400 | 404) {
        rate_header(&mut resp, rate);
    }
    let _ = ctx;
    resp
}

fn rate_header(resp: &mut Response, rate: Option<f64>) {
    if let Some(rate) = rate {
        set_header(resp, "x-amzn-RateLimit-Limit", &format!("{rate:?}"));
    }
}

/// A body for an injected failure.
fn injected(status: u16, error: Option<String>) -> ApiError {
    let status_code = crate::http::status(status);
    let (code, message) = match status {
        429 => (
            "QuotaExceeded",
            "You exceeded your quota for the requested resource.",
        ),
        503 => (
            "ServiceUnavailable",
            "Service temporarily unavailable. Please try again.",
        ),
        403 => ("Unauthorized", DENIED),
        400 => ("InvalidInput", "Invalid Input"),
        _ => (
            "InternalFailure",
            "We encountered an internal error. Please try again.",
        ),
    };
    ApiError::new(status_code, error.as_deref().unwrap_or(code), message, None)
}

fn throttled() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "QuotaExceeded",
        "You exceeded your quota for the requested resource.",
        None,
    )
}

/// Resolves a production route to its operation and who may call it.
fn route(method: &Method, segs: &[&str]) -> Option<(&'static str, Access)> {
    let op = match (method.as_str(), segs) {
        ("GET", ["sellers", "v1", "marketplaceParticipations"]) => {
            ("getMarketplaceParticipations", Access::Seller)
        }
        ("GET", ["sellers", "v1", "account"]) => ("getAccount", Access::Seller),
        ("POST", ["tokens", "2021-03-01", "restrictedDataToken"]) => {
            ("createRestrictedDataToken", Access::Seller)
        }
        ("GET", ["orders", "v0", "orders", _, "address"]) => ("getOrderAddress", Access::Restricted),
        ("GET", ["orders", "v0", "orders", _]) => ("getOrder", Access::SellerOrRdt),
        ("GET", ["notifications", "v1", "destinations"]) => {
            ("getDestinations", Access::Grantless(NOTIFICATIONS_SCOPE))
        }
        ("POST", ["notifications", "v1", "destinations"]) => {
            ("createDestination", Access::Grantless(NOTIFICATIONS_SCOPE))
        }
        ("GET", ["notifications", "v1", "destinations", _]) => {
            ("getDestination", Access::Grantless(NOTIFICATIONS_SCOPE))
        }
        ("DELETE", ["notifications", "v1", "destinations", _]) => {
            ("deleteDestination", Access::Grantless(NOTIFICATIONS_SCOPE))
        }
        ("POST", ["applications", "2023-11-30", "clientSecret"]) => {
            ("rotateApplicationClientSecret", Access::Grantless(ROTATION_SCOPE))
        }
        _ => return None,
    };
    Some(op)
}

/// Whether an RDT's resources cover `method path`.
fn rdt_covers(resources: &[RdtResource], method: &str, path: &str) -> Option<Vec<String>> {
    let actual = segments(path);
    resources
        .iter()
        .find(|r| {
            r.method == method && (r.path == path || match_template(&segments(&r.path), &actual).is_some())
        })
        .map(|r| r.data_elements.clone())
}

/// Handles a request to an SP-API or SP-API sandbox host.
pub async fn handle(ctx: Ctx) -> Response {
    let (region, sandbox) = match ctx.kind {
        HostKind::SpApi(r) => (r, false),
        HostKind::SpApiSandbox(r) => (r, true),
        _ => return error_response(&ctx, &ApiError::not_found("Resource not found."), None),
    };
    let token = ctx.header_nonempty("x-amz-access-token").map(str::to_owned);
    let record = token
        .as_deref()
        .and_then(|t| ctx.shared.inner.lock().access_tokens.get(t).cloned());

    let injected_fault = faults::check(
        &ctx.shared,
        FaultQuery {
            target: FaultTarget::Api,
            host: &ctx.host,
            path: &ctx.path,
            client_id: record.as_ref().map(|r| r.client_id.as_str()),
            refresh_token: None,
        },
    )
    .await;
    match injected_fault {
        Some(Injected::Drop) => return faults::drop_connection(&ctx, true).await,
        Some(Injected::Fail { status, error }) => {
            let mut resp = error_response(&ctx, &injected(status, error), None);
            resp.extensions_mut().insert(FaultMarker);
            return resp;
        }
        None => {}
    }

    let path = ctx.path.clone();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if sandbox {
        return sandbox_answer(&ctx, token.as_deref(), record.as_ref());
    }
    let payload = (ctx.method == Method::GET)
        .then(|| ctx.shared.inner.lock().payload(&ctx.host, &ctx.path))
        .flatten();
    let route = match &payload {
        Some(_) => Some((crate::payload::OPERATION, Access::Seller)),
        None => route(&ctx.method, &segs),
    };
    let Some((operation, access)) = route else {
        return error_response(
            &ctx,
            &ApiError::not_found("The requested resource was not found."),
            None,
        );
    };

    // Authentication and authorization.
    let now = ctx.now();
    let record = match authorize(&ctx, token.as_deref(), record, access, region, now) {
        Ok(r) => r,
        Err(e) => return error_response(&ctx, &e, None),
    };
    let bucket_key = match &record.principal {
        Principal::Seller {
            selling_partner_id, ..
        } => format!("{selling_partner_id}|{}", record.client_id),
        _ => record.client_id.clone(),
    };
    let throttle = ctx.shared.inner.lock().throttle(operation, &bucket_key, now);
    let rate = match throttle {
        Throttle::Allowed(rate) => rate,
        Throttle::Throttled(_) => return error_response(&ctx, &throttled(), None),
    };

    if let Some(payload) = &payload {
        let mut resp = crate::payload::response(payload);
        rate_header(&mut resp, rate);
        return resp;
    }

    let result = match operation {
        "getMarketplaceParticipations" => marketplace_participations(&ctx, &record),
        "getAccount" => account(&ctx, &record),
        "createRestrictedDataToken" => create_rdt(&ctx, &record, now),
        "getOrderAddress" => order_address(&record, segs[3]),
        "getOrder" => order(&ctx, &record, segs[3]),
        "getDestinations" => destinations(&ctx, &record),
        "createDestination" => create_destination(&ctx, &record),
        "getDestination" => get_destination(&ctx, &record, segs[3]),
        "deleteDestination" => delete_destination(&ctx, &record, segs[3]),
        "rotateApplicationClientSecret" => rotate_secret(&ctx, &record, now),
        _ => Err(ApiError::not_found("The requested resource was not found.")),
    };
    match result {
        Ok((status, body)) => {
            let mut resp = match body {
                Some(b) => json_response(status, &b),
                None => {
                    let mut r = response(status, "application/json", "");
                    r.headers_mut().remove("content-type");
                    r
                }
            };
            rate_header(&mut resp, rate);
            resp
        }
        Err(e) => error_response(&ctx, &e, rate),
    }
}

/// Checks the token against the operation's access rule.
fn authorize(
    ctx: &Ctx,
    token: Option<&str>,
    record: Option<AccessRecord>,
    access: Access,
    region: Region,
    now: i64,
) -> Result<AccessRecord, ApiError> {
    if token.is_none() {
        return Err(ApiError::unauthorized(Some(
            "Access token is missing in the request header.",
        )));
    }
    let invalid = || {
        ApiError::unauthorized(Some(
            "The access token you provided is revoked, malformed or invalid.",
        ))
    };
    let record = record.ok_or_else(invalid)?;
    if record.revoked {
        return Err(invalid());
    }
    if now >= record.expires_ms {
        return Err(ApiError::unauthorized(Some(
            "The access token you provided has expired.",
        )));
    }
    let app_kind = ctx
        .shared
        .inner
        .lock()
        .apps
        .get(&record.client_id)
        .map(|a| a.kind);
    if app_kind != Some(AppKind::SpApi) {
        return Err(ApiError::unauthorized(None));
    }
    let seller_in_region = matches!(
        &record.principal,
        Principal::Seller { region: r, .. } if *r == region
    );
    let method = ctx.method.as_str();
    let allowed = match access {
        Access::Seller => seller_in_region && record.rdt.is_none(),
        Access::SellerOrRdt => {
            seller_in_region
                && record
                    .rdt
                    .as_ref()
                    .is_none_or(|r| rdt_covers(r, method, &ctx.path).is_some())
        }
        Access::Restricted => {
            seller_in_region
                && record
                    .rdt
                    .as_ref()
                    .is_some_and(|r| rdt_covers(r, method, &ctx.path).is_some())
        }
        Access::Grantless(scope) => matches!(
            &record.principal,
            Principal::Grantless { scopes } if scopes.iter().any(|s| s == scope)
        ),
    };
    if allowed {
        Ok(record)
    } else {
        Err(ApiError::unauthorized(None))
    }
}

type Answer = Result<(StatusCode, Option<Value>), ApiError>;

fn marketplace_json(m: &hosts::Marketplace) -> Value {
    json!({
        "id": m.id,
        "countryCode": m.country_code,
        "name": m.name,
        "defaultCurrencyCode": m.currency,
        "defaultLanguageCode": m.language,
        "domainName": m.domain,
    })
}

fn store_name(ctx: &Ctx, record: &AccessRecord) -> String {
    let Principal::Seller {
        selling_partner_id, ..
    } = &record.principal
    else {
        return String::new();
    };
    ctx.shared
        .inner
        .lock()
        .sellers
        .get(selling_partner_id)
        .map(|s| s.store_name.clone())
        .unwrap_or_else(|| format!("Store {selling_partner_id}"))
}

fn marketplace_participations(ctx: &Ctx, record: &AccessRecord) -> Answer {
    let store = store_name(ctx, record);
    let markets = ctx.shared.inner.lock().seller_marketplaces(&record.principal);
    let payload: Vec<Value> = markets
        .iter()
        .map(|m| {
            json!({
                "marketplace": marketplace_json(m),
                "storeName": store,
                "participation": {"isParticipating": true, "hasSuspendedListings": false},
            })
        })
        .collect();
    Ok((StatusCode::OK, Some(json!({ "payload": payload }))))
}

fn account(ctx: &Ctx, record: &AccessRecord) -> Answer {
    let store = store_name(ctx, record);
    let markets = ctx.shared.inner.lock().seller_marketplaces(&record.principal);
    let country = markets.first().map(|m| m.country_code).unwrap_or("US");
    let list: Vec<Value> = markets
        .iter()
        .map(|m| {
            json!({
                "marketplace": {"id": m.id, "name": m.name, "countryCode": m.country_code, "domainName": m.domain},
                "storeName": store,
                "participation": {"isParticipating": true, "hasSuspendedListings": false},
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Some(json!({"payload": {
            "businessType": "PRIVATE_LIMITED",
            "marketplaceParticipationList": list,
            "sellingPlan": "PROFESSIONAL",
            "business": {
                "name": format!("{store} Ltd."),
                "registeredBusinessAddress": {
                    "addressLine1": "410 Terry Ave N",
                    "city": "Seattle",
                    "stateOrProvinceCode": "WA",
                    "postalCode": "98109",
                    "countryCode": country,
                },
            },
            "primaryContact": {
                "name": "Jane Doe",
                "address": {
                    "addressLine1": "410 Terry Ave N",
                    "city": "Seattle",
                    "postalCode": "98109",
                    "countryCode": country,
                },
            },
        }})),
    ))
}

/// The model's 400 example for a resource without a method.
fn resource_not_provided() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidRequest",
        "Request is missing or has invalid parameters",
        Some("Resource not provided."),
    )
}

fn create_rdt(ctx: &Ctx, record: &AccessRecord, now: i64) -> Answer {
    let body: Value = serde_json::from_slice(&ctx.body)
        .map_err(|_| ApiError::invalid_input("The request body is not valid JSON."))?;
    let body = body
        .as_object()
        .ok_or_else(|| ApiError::invalid_input("The request body must be a JSON object."))?;
    let target = match body.get("targetApplication") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid_input("Invalid targetApplication.")),
    };
    let resources = match body.get("restrictedResources") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) | None | Some(Value::Null) => return Err(resource_not_provided()),
        Some(_) => return Err(ApiError::invalid_input("restrictedResources must be an array.")),
    };
    if resources.len() > 50 {
        return Err(ApiError::invalid_input(
            "Too many restricted resources: at most 50 are allowed.",
        ));
    }
    let mut parsed = Vec::new();
    for r in resources {
        let r = r
            .as_object()
            .ok_or_else(|| ApiError::invalid_input("Each restricted resource must be an object."))?;
        let method = match r.get("method") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => return Err(resource_not_provided()),
            Some(_) => return Err(ApiError::invalid_input("Invalid method.")),
        };
        if !["GET", "PUT", "POST", "DELETE"].contains(&method.as_str()) {
            return Err(ApiError::invalid_input(&format!(
                "Invalid method: {method}. Valid values: GET, PUT, POST, DELETE."
            )));
        }
        let path = match r.get("path") {
            Some(Value::String(p)) if !p.is_empty() => p.clone(),
            None | Some(Value::Null) | Some(Value::String(_)) => return Err(resource_not_provided()),
            Some(_) => return Err(ApiError::invalid_input("Invalid path.")),
        };
        if !path.starts_with('/') {
            return Err(ApiError::invalid_input(&format!(
                "Invalid path: {path}. The path must start with '/'."
            )));
        }
        let data_elements = match r.get("dataElements") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for item in items {
                    match item.as_str() {
                        Some(e @ ("buyerInfo" | "shippingAddress" | "buyerTaxInformation")) => {
                            out.push(e.to_owned());
                        }
                        _ => {
                            return Err(ApiError::invalid_input(&format!(
                                "Invalid dataElements value: {item}. Valid values: buyerInfo, shippingAddress, buyerTaxInformation."
                            )));
                        }
                    }
                }
                out
            }
            Some(_) => return Err(ApiError::invalid_input("dataElements must be an array.")),
        };
        parsed.push(RdtResource {
            method,
            path,
            data_elements,
        });
    }
    let mut inner = ctx.shared.inner.lock();
    if let Some(target) = &target
        && inner.app_by_application_id(target).is_none()
    {
        return Err(ApiError::invalid_input(&format!(
            "Invalid targetApplication: {target}."
        )));
    }
    let quirks_wrap = inner.settings.quirks.rdt_payload_wrapper;
    let token = inner.issue_access_token(
        AccessRecord {
            client_id: record.client_id.clone(),
            principal: record.principal.clone(),
            issued_ms: now,
            expires_ms: now + RDT_TTL_SECS * 1000,
            revoked: false,
            refresh_token: record.refresh_token.clone(),
            rdt: Some(parsed),
            host: record.host.clone(),
        },
        now,
    );
    let body = json!({"restrictedDataToken": token, "expiresIn": RDT_TTL_SECS});
    let body = if quirks_wrap {
        json!({ "payload": body })
    } else {
        body
    };
    Ok((StatusCode::OK, Some(body)))
}

fn valid_order_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 3
        && [3, 7, 7]
            .iter()
            .zip(&parts)
            .all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit()))
}

fn shipping_address(record: &AccessRecord) -> Value {
    let (city, region, postal, country) = match &record.principal {
        Principal::Seller {
            region: Region::Eu, ..
        } => ("London", "Greater London", "EC1A 1BB", "GB"),
        Principal::Seller {
            region: Region::Fe, ..
        } => ("Tokyo", "Tokyo", "100-0001", "JP"),
        _ => ("Seattle", "WA", "98109", "US"),
    };
    json!({
        "Name": "Jane Doe",
        "AddressLine1": "1 Example Street",
        "City": city,
        "StateOrRegion": region,
        "PostalCode": postal,
        "CountryCode": country,
        "AddressType": "Residential",
    })
}

fn order_address(record: &AccessRecord, order_id: &str) -> Answer {
    if !valid_order_id(order_id) {
        return Err(ApiError::not_found(&format!("Order {order_id} not found.")));
    }
    Ok((
        StatusCode::OK,
        Some(json!({"payload": {
            "AmazonOrderId": order_id,
            "ShippingAddress": shipping_address(record),
        }})),
    ))
}

fn order(ctx: &Ctx, record: &AccessRecord, order_id: &str) -> Answer {
    if !valid_order_id(order_id) {
        return Err(ApiError::not_found(&format!("Order {order_id} not found.")));
    }
    let elements = record
        .rdt
        .as_ref()
        .and_then(|r| rdt_covers(r, "GET", &ctx.path))
        .unwrap_or_default();
    let market = ctx
        .shared
        .inner
        .lock()
        .seller_marketplaces(&record.principal)
        .first()
        .map(|m| m.id)
        .unwrap_or("ATVPDKIKX0DER");
    let mut payload = json!({
        "AmazonOrderId": order_id,
        "PurchaseDate": ids::iso8601_ms(ctx.now() - 86_400_000),
        "OrderStatus": "Unshipped",
        "MarketplaceId": market,
        "FulfillmentChannel": "MFN",
    });
    if elements.iter().any(|e| e == "shippingAddress") {
        payload["ShippingAddress"] = shipping_address(record);
    }
    if elements.iter().any(|e| e == "buyerInfo") {
        payload["BuyerInfo"] = json!({"BuyerEmail": "buyer@marketplace.amazon.com", "BuyerName": "Jane Doe"});
    }
    if elements.iter().any(|e| e == "buyerTaxInformation") {
        payload["BuyerTaxInformation"] =
            json!({"BuyerLegalCompanyName": "Example GmbH", "BuyerTaxRegistrationId": "DE123456789"});
    }
    Ok((StatusCode::OK, Some(json!({ "payload": payload }))))
}

fn destinations(ctx: &Ctx, record: &AccessRecord) -> Answer {
    let list = ctx
        .shared
        .inner
        .lock()
        .destinations
        .get(&record.client_id)
        .cloned()
        .unwrap_or_default();
    Ok((StatusCode::OK, Some(json!({ "payload": list }))))
}

fn create_destination(ctx: &Ctx, record: &AccessRecord) -> Answer {
    let body: Value = serde_json::from_slice(&ctx.body)
        .map_err(|_| ApiError::invalid_input("The request body is not valid JSON."))?;
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty() && n.len() <= 256)
        .ok_or_else(|| ApiError::invalid_input("name is required."))?;
    let spec = body
        .get("resourceSpecification")
        .and_then(Value::as_object)
        .ok_or_else(|| ApiError::invalid_input("resourceSpecification is required."))?;
    let mut inner = ctx.shared.inner.lock();
    let application_id = inner
        .apps
        .get(&record.client_id)
        .and_then(|a| a.application_id.clone())
        .unwrap_or_default();
    let resource = if let Some(sqs) = spec.get("sqs") {
        let arn = sqs
            .get("arn")
            .and_then(Value::as_str)
            .filter(|a| a.starts_with("arn:aws:sqs:"))
            .ok_or_else(|| ApiError::invalid_input("sqs.arn must be an SQS queue ARN."))?;
        json!({"sqs": {"arn": arn}})
    } else if let Some(eb) = spec.get("eventBridge") {
        let region = eb.get("region").and_then(Value::as_str);
        let account = eb.get("accountId").and_then(Value::as_str);
        let (Some(region), Some(account)) = (region, account) else {
            return Err(ApiError::invalid_input(
                "eventBridge.region and eventBridge.accountId are required.",
            ));
        };
        json!({"eventBridge": {
            "name": format!("aws.partner/sellingpartnerapi.amazon.com/{account}/{application_id}"),
            "region": region,
            "accountId": account,
        }})
    } else {
        return Err(ApiError::invalid_input(
            "resourceSpecification needs sqs or eventBridge.",
        ));
    };
    let list = inner.destinations.entry(record.client_id.clone()).or_default();
    if list.iter().any(|d| d["resource"] == resource) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "Conflict",
            "A destination with this resource already exists.",
            None,
        ));
    }
    let destination = json!({"name": name, "destinationId": ids::uuid(), "resource": resource});
    list.push(destination.clone());
    Ok((StatusCode::OK, Some(json!({ "payload": destination }))))
}

fn get_destination(ctx: &Ctx, record: &AccessRecord, id: &str) -> Answer {
    let found = ctx
        .shared
        .inner
        .lock()
        .destinations
        .get(&record.client_id)
        .and_then(|l| l.iter().find(|d| d["destinationId"] == id).cloned());
    match found {
        Some(d) => Ok((StatusCode::OK, Some(json!({ "payload": d })))),
        None => Err(ApiError::not_found(&format!("Destination {id} not found."))),
    }
}

fn delete_destination(ctx: &Ctx, record: &AccessRecord, id: &str) -> Answer {
    let mut inner = ctx.shared.inner.lock();
    let list = inner.destinations.entry(record.client_id.clone()).or_default();
    let before = list.len();
    list.retain(|d| d["destinationId"] != id);
    if list.len() == before {
        return Err(ApiError::not_found(&format!("Destination {id} not found.")));
    }
    Ok((StatusCode::OK, Some(json!({}))))
}

fn rotate_secret(ctx: &Ctx, record: &AccessRecord, now: i64) -> Answer {
    let mut inner = ctx.shared.inner.lock();
    let Some(app) = inner.apps.get(&record.client_id).cloned() else {
        return Err(ApiError::unauthorized(None));
    };
    if !app.rotation_enrolled {
        return Err(ApiError::invalid_input(
            "Application is not enrolled for rotation notification. Please update application notification preference in Developer console.",
        ));
    }
    let Some((secret, new_expiry, old_expiry)) = inner.rotate_secret(&app.client_id, now) else {
        return Err(ApiError::unauthorized(None));
    };
    let extras = inner.settings.quirks.notification_envelope_extras;
    let notification = notification(
        "APPLICATION_OAUTH_CLIENT_NEW_SECRET",
        json!({"applicationOAuthClientNewSecret": {
            "clientId": app.client_id,
            "newClientSecret": secret,
            "newClientSecretExpiryTime": ids::iso8601_ms(new_expiry),
            "oldClientSecretExpiryTime": ids::iso8601_ms(old_expiry),
        }}),
        app.application_id.as_deref().unwrap_or(""),
        now,
        extras,
    );
    inner.notifications.push(notification);
    Ok((StatusCode::NO_CONTENT, None))
}

/// A notification in the shape of AMAZON.md §3.7.
pub fn notification(kind: &str, payload: Value, application_id: &str, now: i64, extras: bool) -> Value {
    let mut n = json!({
        "notificationVersion": "1.0",
        "notificationType": kind,
        "payload": payload,
        "notificationMetadata": {
            "applicationId": application_id,
            "subscriptionId": ids::uuid(),
            "publishTime": ids::iso8601_ms(now),
            "notificationId": ids::uuid(),
        },
    });
    if extras {
        n["payloadVersion"] = json!("2023-11-30");
        n["eventTime"] = json!(ids::iso8601_ms(now));
    }
    n
}

/// Answers on a sandbox host from the models' static examples, after checking the token.
fn sandbox_answer(ctx: &Ctx, token: Option<&str>, record: Option<&AccessRecord>) -> Response {
    let now = ctx.now();
    if token.is_none() {
        let e = ApiError::unauthorized(Some("Access token is missing in the request header."));
        return error_response(ctx, &e, None);
    }
    let Some(record) = record.filter(|r| !r.revoked) else {
        let e = ApiError::unauthorized(Some(
            "The access token you provided is revoked, malformed or invalid.",
        ));
        return error_response(ctx, &e, None);
    };
    if now >= record.expires_ms {
        let e = ApiError::unauthorized(Some("The access token you provided has expired."));
        return error_response(ctx, &e, None);
    }
    let is_sp_api = ctx
        .shared
        .inner
        .lock()
        .apps
        .get(&record.client_id)
        .is_some_and(|a| a.kind == AppKind::SpApi);
    if !is_sp_api {
        return error_response(ctx, &ApiError::unauthorized(None), None);
    }
    let answer = ctx.shared.sandbox.answer(
        ctx.method.as_str(),
        &ctx.path,
        &ctx.query_pairs(),
        &ctx.headers,
        &ctx.body,
    );
    let operation_id = match &answer {
        SandboxAnswer::Matched { operation_id, .. } | SandboxAnswer::NoMatch { operation_id } => {
            operation_id.clone()
        }
        SandboxAnswer::UnknownOperation => {
            return error_response(
                ctx,
                &ApiError::not_found("The requested resource was not found."),
                None,
            );
        }
    };
    let key = format!("{operation_id}|{}", record.client_id);
    let rate = match ctx.shared.inner.lock().throttle("sandbox", &key, now) {
        Throttle::Allowed(rate) => rate,
        Throttle::Throttled(_) => return error_response(ctx, &throttled(), None),
    };
    match answer {
        SandboxAnswer::Matched { status, body, .. } => {
            let status = crate::http::status(status);
            let mut resp = match body {
                Some(b) => json_response(status, &b),
                None => {
                    let mut r = response(status, "application/json", "");
                    r.headers_mut().remove("content-type");
                    r
                }
            };
            if status.is_success() || matches!(status.as_u16(), 400 | 404) {
                rate_header(&mut resp, rate);
            }
            if !status.is_success() {
                set_header(
                    &mut resp,
                    "x-amzn-ErrorType",
                    &format!(
                        "{}:http://internal.amazon.com/coral/com.amazon.coral.service/",
                        error_type(status)
                    ),
                );
            }
            resp
        }
        _ => error_response(
            ctx,
            &ApiError::not_found("Could not match input arguments to a sandbox response."),
            rate,
        ),
    }
}
