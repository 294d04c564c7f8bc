//! `lwa-broker login`: consent in the browser, the redirect caught on a loopback listener (or
//! pasted), the code exchanged, the tokens stored.

use std::collections::HashMap;
use std::io::{BufRead as _, IsTerminal as _};
use std::time::Duration;

use lwa::{ADS_SCOPE_CAMPAIGN_MANAGEMENT, AdsConsent, Api, AuthorizationCode, Pkce, SpApiConsent};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use url::Url;

use super::Failure;
use super::settings::Context;

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Paste the URL the browser was redirected to instead of catching it on a loopback listener.
    #[arg(long)]
    paste: bool,
    /// Print the consent URL without opening a browser [env: LWA_BROKER_NO_BROWSER].
    #[arg(long)]
    no_browser: bool,
    /// SP-API: seller (Seller Central) or vendor (Vendor Central) [env: LWA_BROKER_ACCOUNT_TYPE].
    #[arg(long)]
    account_type: Option<String>,
    /// SP-API: the app's application id [env: LWA_BROKER_APPLICATION_ID].
    #[arg(long)]
    application_id: Option<String>,
    /// SP-API: the app is in draft (adds version=beta) [env: LWA_BROKER_DRAFT_APP].
    #[arg(long)]
    draft: bool,
    /// How long to wait for the redirect, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub async fn run(context: &Context, args: LoginArgs) -> Result<(), Failure> {
    let api = context.api()?;
    let region = context.region()?;
    let redirect_uri = context.redirect_uri();
    let credentials = context.credentials()?;
    let state = lwa::random_state();
    let pkce = (api == Api::Ads).then(Pkce::generate);
    let consent_url = match api {
        Api::SpApi => SpApiConsent {
            application_id: context.sources.require(
                args.application_id.as_deref(),
                "LWA_BROKER_APPLICATION_ID",
                "--application-id",
            )?,
            state: state.clone(),
            redirect_uri: Some(redirect_uri.clone()),
            draft: context.sources.flag_bool(args.draft, "LWA_BROKER_DRAFT_APP"),
            account_type: context.account_type(args.account_type.as_deref())?,
            region,
            marketplace: context.marketplace()?,
        }
        .url(&context.endpoints),
        Api::Ads => AdsConsent {
            client_id: credentials.client_id.clone(),
            scopes: context
                .sources
                .get(None, "AMAZON_SCOPE")
                .unwrap_or_else(|| ADS_SCOPE_CAMPAIGN_MANAGEMENT.into())
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            region,
            code_challenge: pkce.as_ref().map(|p| p.challenge().to_owned()),
        }
        .url(&context.endpoints),
    };

    let paste = args.paste;
    let listener = if paste {
        None
    } else {
        Some(bind_loopback(&redirect_uri).await?)
    };
    eprintln!("Open this URL to authorize {} in {}:\n{consent_url}", api, region);
    if !context
        .sources
        .flag_bool(args.no_browser, "LWA_BROKER_NO_BROWSER")
        && webbrowser::open(&consent_url).is_err()
    {
        eprintln!("(Could not open a browser; open the URL yourself.)");
    }
    let timeout = Duration::from_secs(args.timeout);
    let params = match listener {
        Some(listener) => {
            eprintln!("Waiting for Amazon's redirect to {redirect_uri} …");
            tokio::time::timeout(timeout, catch_redirect(listener, &redirect_uri, &state))
                .await
                .map_err(|_| Failure::temporary("no redirect arrived in time; run login again"))??
        }
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("Paste the URL your browser was redirected to, then press Enter:");
            }
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map(|_| line)
            })
            .await
            .map_err(|e| Failure::other(e.to_string()))?
            .map_err(|e| Failure::other(format!("cannot read standard input: {e}")))?;
            query_of(line.trim())?
        }
    };
    let code = check_redirect(&params, &state, api)?;

    let manager = context.manager()?;
    manager
        .authenticate_with_code(
            &AuthorizationCode::new(code),
            Some(&redirect_uri),
            pkce.as_ref().map(Pkce::verifier),
        )
        .await?;
    manager.set_label("api", api.as_str()).await?;
    manager.set_label("region", region.as_str()).await?;
    if let Some(seller) = params.get("selling_partner_id") {
        manager.set_label("selling_partner_id", seller).await?;
    }
    eprintln!("Logged in: account {:?} ({api}, {region}).", context.account);
    Ok(())
}

/// Checks state and error, and returns the authorization code.
fn check_redirect(params: &HashMap<String, String>, state: &str, api: Api) -> Result<String, Failure> {
    if let Some(error) = params.get("error") {
        let description = params.get("error_description").map(String::as_str).unwrap_or("");
        return Err(Failure::other(
            format!("authorization was not granted: {error} {description}")
                .trim()
                .to_owned(),
        ));
    }
    if params.get("state").map(String::as_str) != Some(state) {
        return Err(Failure::other(
            "the redirect's state does not match this login; start again",
        ));
    }
    let field = match api {
        Api::SpApi => "spapi_oauth_code",
        Api::Ads => "code",
    };
    params
        .get(field)
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| Failure::other(format!("the redirect carries no {field}")))
}

fn query_of(pasted: &str) -> Result<HashMap<String, String>, Failure> {
    let query = match Url::parse(pasted) {
        Ok(url) => url.query().unwrap_or("").to_owned(),
        Err(_) => pasted.trim_start_matches('?').to_owned(),
    };
    let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if params.is_empty() {
        return Err(Failure::config(
            "that is not the redirected URL: it has no query parameters",
        ));
    }
    Ok(params)
}

async fn bind_loopback(redirect_uri: &str) -> Result<TcpListener, Failure> {
    let url = Url::parse(redirect_uri)
        .map_err(|e| Failure::config(format!("AMAZON_OAUTH_REDIRECT_URI is not a URL: {e}")))?;
    let host = url.host_str().unwrap_or("");
    if url.scheme() != "http" || !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        return Err(Failure::config(
            "the loopback listener needs an http://127.0.0.1:PORT/… or http://localhost:PORT/… \
             AMAZON_OAUTH_REDIRECT_URI; use --paste for any other redirect URI",
        ));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let address = if host == "[::1]" {
        format!("[::1]:{port}")
    } else {
        format!("127.0.0.1:{port}")
    };
    TcpListener::bind(&address)
        .await
        .map_err(|e| Failure::other(format!("cannot listen on {address} for the redirect: {e}")))
}

/// Serves the loopback listener until a request for the redirect path with our state arrives.
async fn catch_redirect(
    listener: TcpListener,
    redirect_uri: &str,
    state: &str,
) -> Result<HashMap<String, String>, Failure> {
    let expected_path = Url::parse(redirect_uri)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".into());
    loop {
        let (mut stream, _) = listener
            .accept()
            .await
            .map_err(|e| Failure::other(format!("the loopback listener failed: {e}")))?;
        let mut buffer = Vec::with_capacity(2048);
        let mut chunk = [0u8; 2048];
        while !buffer.windows(4).any(|w| w == b"\r\n\r\n") && buffer.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let request = String::from_utf8_lossy(&buffer);
        let target = request
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let ours = path == expected_path && params.get("state").map(String::as_str) == Some(state);
        let (status, page) = if !ours {
            ("404 Not Found", "Not the authorization redirect.")
        } else if params.contains_key("error") {
            ("200 OK", "Authorization was declined. You can close this window.")
        } else {
            (
                "200 OK",
                "lwa-broker received the authorization. You can close this window.",
            )
        };
        let body = format!("<!doctype html><title>lwa-broker</title><p>{page}</p>");
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
             Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
        if ours {
            return Ok(params);
        }
    }
}
