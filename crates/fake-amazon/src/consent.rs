//! Consent pages: Seller/Vendor Central `/apps/authorize/consent` (AMAZON.md §2.2) and the Ads
//! LWA page `/ap/oa` (§2.1). Plain HTML forms with Approve and Deny buttons.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use html_escape::{encode_double_quoted_attribute as attr, encode_text as text};

use crate::defaults;
use crate::faults::{self, FaultQuery, Injected};
use crate::hosts::HostKind;
use crate::http::{Ctx, FaultMarker, append_query, first, form_pairs, html, redirect};
use crate::model::{AccountType, AppKind, FaultTarget, Principal, Region};
use crate::state::{AMAZON_STATE_TTL_MS, AppRecord, Challenge, Inner};

/// Ads scopes the consent page accepts (AMAZON.md §2.1).
pub const ADS_SCOPES: &[&str] = &[
    "advertising::campaign_management",
    "advertising::audiences",
    "advertising::test:create_account",
    "cpc_advertising:campaign_management",
];

/// Handles a request to a Seller Central, Vendor Central or Ads consent host.
pub async fn handle(ctx: Ctx) -> Response {
    let injected = faults::check(
        &ctx.shared,
        FaultQuery {
            target: FaultTarget::Consent,
            host: &ctx.host,
            path: &ctx.path,
            client_id: None,
            refresh_token: None,
        },
    )
    .await;
    match injected {
        Some(Injected::Drop) => return faults::drop_connection(&ctx, true).await,
        Some(Injected::Fail { status, error }) => {
            let mut resp = error_page(
                crate::http::status(status),
                "Something went wrong",
                &format!(
                    "We're sorry, an error occurred ({}). Please try again later.",
                    error.unwrap_or_else(|| status.to_string())
                ),
            );
            resp.extensions_mut().insert(FaultMarker);
            return resp;
        }
        None => {}
    }
    let is_form = ctx.method == Method::GET || ctx.method == Method::POST;
    match ctx.kind {
        HostKind::Central {
            region,
            account_type,
            marketplace,
            ..
        } if is_form && ctx.path == "/apps/authorize/consent" => {
            sp_api(&ctx, region, account_type, marketplace)
        }
        HostKind::Central {
            region,
            account_type,
            marketplace,
            ..
        } if ctx.method == Method::GET && confirm_application_id(&ctx.path).is_some() => {
            let application_id = confirm_application_id(&ctx.path).unwrap_or_default();
            confirm(&ctx, &application_id, region, account_type, marketplace)
        }
        HostKind::AdsConsent(_) if is_form && ctx.path == "/ap/oa" => ads(&ctx),
        _ => error_page(
            StatusCode::NOT_FOUND,
            "Page not found",
            "Looking for something? We're sorry. The Web address you entered is not a functioning page on our site.",
        ),
    }
}

/// The request's parameters: the query on GET, the form body on POST.
fn parameters(ctx: &Ctx) -> Vec<(String, String)> {
    if ctx.method == Method::POST {
        form_pairs(&ctx.body)
    } else {
        ctx.query_pairs()
    }
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(
        status,
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
             <body><h1>{}</h1><p>{}</p></body></html>",
            text(title),
            text(title),
            text(message)
        ),
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        attr(name),
        attr(value)
    )
}

fn consent_page(
    title: &str,
    intro: &str,
    action: &str,
    hidden_fields: &str,
    input: (&str, &str, &str),
) -> Response {
    let (label, name, value) = input;
    html(
        StatusCode::OK,
        format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>\
             <h1>{title}</h1><p>{intro}</p>\
             <form method=\"post\" action=\"{action}\">{hidden_fields}\
             <label>{label} <input type=\"text\" name=\"{name}\" value=\"{value}\"></label>\
             <button type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\
             <button type=\"submit\" name=\"action\" value=\"deny\">Deny</button>\
             </form></body></html>",
            title = text(title),
            intro = text(intro),
            action = attr(action),
            label = text(label),
            name = attr(name),
            value = attr(value),
        ),
    )
}

/// The `application_id` of `/apps/authorize/confirm/{application_id}` (percent-decoded).
fn confirm_application_id(path: &str) -> Option<String> {
    path.strip_prefix("/apps/authorize/confirm/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(crate::sandbox::percent_decode)
}

/// Checks an SP-API authorization request as Seller/Vendor Central does: the app exists, a draft
/// app comes with `version=beta` (MD1000), the redirect URI is registered (MD5101). Answers the
/// app and the redirect URI (the app's first one when none is given), or the error page.
fn sp_app_and_redirect(
    ctx: &Ctx,
    application_id: &str,
    given_redirect: Option<&str>,
    version: Option<&str>,
) -> Result<(AppRecord, String), Box<Response>> {
    let app = ctx
        .shared
        .inner
        .lock()
        .app_by_application_id(application_id)
        .filter(|a| a.kind == AppKind::SpApi)
        .cloned();
    let Some(app) = app else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "We're sorry!",
            &format!(
                "The application you are trying to authorize could not be found (application_id={application_id})."
            ),
        )));
    };
    if app.draft && version != Some("beta") {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "We're sorry!",
            "An error occurred when we tried to authorize the application. Error code: MD1000. \
             The application is in Draft state: add version=beta to the authorization URI.",
        )));
    }
    let redirect_uri = match given_redirect {
        Some(r) if !app.redirect_uris.iter().any(|u| u == r) => {
            return Err(Box::new(error_page(
                StatusCode::BAD_REQUEST,
                "We're sorry!",
                &format!(
                    "An error occurred when we tried to authorize the application. Error code: MD5101. \
                     The redirect_uri {r} is not one of the application's OAuth Redirect URIs."
                ),
            )));
        }
        Some(r) => r.to_owned(),
        None => match app.redirect_uris.first() {
            Some(r) => r.clone(),
            None => {
                return Err(Box::new(error_page(
                    StatusCode::BAD_REQUEST,
                    "We're sorry!",
                    "An error occurred when we tried to authorize the application. Error code: MD5101. \
                     The application has no OAuth Redirect URI.",
                )));
            }
        },
    };
    Ok((app, redirect_uri))
}

/// What a Seller/Vendor Central approval issues a code for.
struct SpApproval<'a> {
    client_id: &'a str,
    region: Region,
    account_type: AccountType,
    /// The host's marketplace, when it serves only one.
    marketplace: Option<&'static str>,
    redirect_uri: &'a str,
    redirect_given: bool,
    state: Option<&'a str>,
}

impl SpApproval<'_> {
    /// Registers the partner when new, issues the code (single use, 5 minutes, bound to the
    /// client, the redirect URI, the host's region and account type) and redirects to the app.
    fn approve(&self, ctx: &Ctx, inner: &mut Inner, selling_partner_id: &str, now: i64) -> Response {
        if let Err(message) = inner.seller_or_register(selling_partner_id, self.region, self.account_type) {
            return error_page(StatusCode::BAD_REQUEST, "We're sorry!", &message);
        }
        let fe_per_marketplace = inner.settings.quirks.fe_authorization_per_marketplace;
        let marketplace_ids = match (fe_per_marketplace, self.region, self.marketplace) {
            (true, Region::Fe, Some(m)) => Some(vec![m.to_owned()]),
            _ => None,
        };
        let principal = Principal::Seller {
            selling_partner_id: selling_partner_id.to_owned(),
            region: self.region,
            account_type: self.account_type,
            marketplace_ids,
        };
        let code = inner.issue_code(
            self.client_id,
            principal,
            self.redirect_uri,
            self.redirect_given,
            None,
            &ctx.host,
            None,
            now,
        );
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(s) = self.state {
            query.push(("state", s));
        }
        query.push(("selling_partner_id", selling_partner_id));
        query.push(("spapi_oauth_code", &code));
        redirect(&append_query(self.redirect_uri, &query))
    }
}

fn sp_api(
    ctx: &Ctx,
    region: Region,
    account_type: AccountType,
    marketplace: Option<&'static str>,
) -> Response {
    let params = parameters(ctx);
    let application_id = first(&params, "application_id").unwrap_or("");
    let state = first(&params, "state");
    let given_redirect = first(&params, "redirect_uri").filter(|r| !r.is_empty());
    let version = first(&params, "version");
    let auto_approve = ctx.shared.inner.lock().settings.auto_approve;
    let (app, redirect_uri) = match sp_app_and_redirect(ctx, application_id, given_redirect, version) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let default_partner = defaults::default_selling_partner(region, account_type);

    let approval = SpApproval {
        client_id: &app.client_id,
        region,
        account_type,
        marketplace,
        redirect_uri: &redirect_uri,
        redirect_given: given_redirect.is_some(),
        state,
    };
    let approve = |selling_partner_id: &str| -> Response {
        let now = ctx.now();
        approval.approve(ctx, &mut ctx.shared.inner.lock(), selling_partner_id, now)
    };

    if ctx.method == Method::GET {
        if auto_approve {
            return approve(default_partner);
        }
        let mut fields = hidden("application_id", application_id);
        if let Some(s) = state {
            fields.push_str(&hidden("state", s));
        }
        if let Some(r) = given_redirect {
            fields.push_str(&hidden("redirect_uri", r));
        }
        if let Some(v) = version {
            fields.push_str(&hidden("version", v));
        }
        let central = match account_type {
            AccountType::Seller => "Seller Central",
            AccountType::Vendor => "Vendor Central",
        };
        return consent_page(
            &format!(
                "Authorize application ({central}, {})",
                region.as_str().to_uppercase()
            ),
            &format!(
                "Application {application_id} requests access to your selling account. \
                 It will redirect you to {redirect_uri}."
            ),
            &format!("/{}/apps/authorize/consent", ctx.host),
            &fields,
            ("Selling partner id", "selling_partner_id", default_partner),
        );
    }

    match first(&params, "action") {
        Some("approve") => {
            let partner = first(&params, "selling_partner_id")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or(default_partner);
            approve(partner)
        }
        Some("deny") => {
            let mut query = vec![
                ("error", "access_denied"),
                ("error_description", "The user denied the authorization request."),
            ];
            if let Some(s) = state {
                query.push(("state", s));
            }
            redirect(&append_query(&redirect_uri, &query))
        }
        _ => error_page(StatusCode::BAD_REQUEST, "We're sorry!", "Choose Approve or Deny."),
    }
}

/// `GET /{Central host}/apps/authorize/confirm/{application_id}`: the app sends the seller back
/// here from its Login URI (Appstore-initiated workflow). Checked like the consent page, then the
/// `amazon_state` must be one the fake issued for this application on a host of this region and
/// account type, unused and younger than 10 minutes; it is consumed and the code issued as the
/// consent page's Approve issues it.
fn confirm(
    ctx: &Ctx,
    application_id: &str,
    region: Region,
    account_type: AccountType,
    marketplace: Option<&'static str>,
) -> Response {
    let params = ctx.query_pairs();
    let state = first(&params, "state");
    let given_redirect = first(&params, "redirect_uri").filter(|r| !r.is_empty());
    let version = first(&params, "version");
    let (app, redirect_uri) = match sp_app_and_redirect(ctx, application_id, given_redirect, version) {
        Ok(found) => found,
        Err(page) => return *page,
    };
    let refuse = |message: &str| error_page(StatusCode::BAD_REQUEST, "We're sorry!", message);
    let Some(amazon_state) = first(&params, "amazon_state").filter(|s| !s.is_empty()) else {
        return refuse("The request is missing the amazon_state parameter.");
    };
    let now = ctx.now();
    let mut inner = ctx.shared.inner.lock();
    let Some(record) = inner.amazon_states.get_mut(amazon_state) else {
        return refuse(&format!("The amazon_state {amazon_state} is not valid."));
    };
    let problem = if record.used {
        Some("has already been used")
    } else if now - record.issued_ms >= AMAZON_STATE_TTL_MS {
        Some("has expired")
    } else if record.application_id != application_id {
        Some("was issued for another application")
    } else if record.region != region || record.account_type != account_type {
        Some("was issued for another region or account type")
    } else {
        None
    };
    if let Some(problem) = problem {
        return refuse(&format!("The amazon_state {amazon_state} {problem}."));
    }
    record.used = true;
    let selling_partner_id = record.selling_partner_id.clone();
    SpApproval {
        client_id: &app.client_id,
        region,
        account_type,
        marketplace,
        redirect_uri: &redirect_uri,
        redirect_given: given_redirect.is_some(),
        state,
    }
    .approve(ctx, &mut inner, &selling_partner_id, now)
}

fn ads(ctx: &Ctx) -> Response {
    let params = parameters(ctx);
    let client_id = first(&params, "client_id").unwrap_or("");
    let state = first(&params, "state");
    let (auto_approve, app) = {
        let inner = ctx.shared.inner.lock();
        (
            inner.settings.auto_approve,
            inner
                .apps
                .get(client_id)
                .filter(|a| a.kind == AppKind::Ads)
                .cloned(),
        )
    };
    let Some(app) = app else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "An error occurred",
            &format!("400 Bad Request: unknown client_id {client_id}."),
        );
    };
    let Some(redirect_uri) = first(&params, "redirect_uri").filter(|r| !r.is_empty()) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "An error occurred",
            "400 Bad Request: redirect_uri is required.",
        );
    };
    if !app.redirect_uris.iter().any(|u| u == redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "An error occurred",
            &format!(
                "400 Bad Request: {redirect_uri} is not an Allowed Return URL of this security profile."
            ),
        );
    }
    let fail = |error: &str, description: &str| -> Response {
        let mut query = vec![("error", error), ("error_description", description)];
        if let Some(s) = state {
            query.push(("state", s));
        }
        redirect(&append_query(redirect_uri, &query))
    };
    if first(&params, "response_type") != Some("code") {
        return fail(
            "unsupported_response_type",
            "The authorization server does not support obtaining an authorization code using this method.",
        );
    }
    let scope = first(&params, "scope").unwrap_or("");
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if scopes.is_empty() || scopes.iter().any(|s| !ADS_SCOPES.contains(s)) {
        return fail("invalid_scope", "An unknown scope was requested");
    }
    let challenge = match (
        first(&params, "code_challenge").filter(|c| !c.is_empty()),
        first(&params, "code_challenge_method").filter(|m| !m.is_empty()),
    ) {
        (None, None) => None,
        (Some(value), method) => {
            let method = method.unwrap_or("plain");
            if method != "S256" && method != "plain" {
                return fail("invalid_request", "Unsupported code_challenge_method");
            }
            Some(Challenge {
                value: value.to_owned(),
                method: method.to_owned(),
            })
        }
        (None, Some(_)) => return fail("invalid_request", "code_challenge is required"),
    };
    let scope_text = scopes.join(" ");

    let approve = |advertiser_id: &str| -> Response {
        let now = ctx.now();
        let mut inner = ctx.shared.inner.lock();
        if let Err(message) = inner.advertiser_or_register(advertiser_id) {
            return error_page(StatusCode::BAD_REQUEST, "An error occurred", &message);
        }
        let code = inner.issue_code(
            &app.client_id,
            Principal::Advertiser {
                advertiser_id: advertiser_id.to_owned(),
            },
            redirect_uri,
            true,
            challenge.clone(),
            &ctx.host,
            Some(scope_text.clone()),
            now,
        );
        let mut query = vec![("code", code.as_str()), ("scope", scope_text.as_str())];
        if let Some(s) = state {
            query.push(("state", s));
        }
        redirect(&append_query(redirect_uri, &query))
    };

    if ctx.method == Method::GET {
        if auto_approve {
            return approve(defaults::ADVERTISER);
        }
        let mut fields = String::new();
        for name in [
            "client_id",
            "scope",
            "response_type",
            "redirect_uri",
            "state",
            "code_challenge",
            "code_challenge_method",
        ] {
            if let Some(v) = first(&params, name) {
                fields.push_str(&hidden(name, v));
            }
        }
        return consent_page(
            "Amazon Ads: allow access",
            &format!(
                "Application {client_id} requests {scope_text}. It will redirect you to {redirect_uri}."
            ),
            &format!("/{}/ap/oa", ctx.host),
            &fields,
            ("Advertiser", "advertiser_id", defaults::ADVERTISER),
        );
    }
    match first(&params, "action") {
        Some("approve") => {
            let advertiser = first(&params, "advertiser_id")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .unwrap_or(defaults::ADVERTISER);
            approve(advertiser)
        }
        Some("deny") => fail("access_denied", "The user denied the authorization request."),
        _ => error_page(
            StatusCode::BAD_REQUEST,
            "An error occurred",
            "Choose Approve or Deny.",
        ),
    }
}
