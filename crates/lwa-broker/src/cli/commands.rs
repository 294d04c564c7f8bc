//! The commands that use stored tokens.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use lwa::{Api, RefreshToken, TokenInfo, TokenStore};
use serde_json::json;

use super::Failure;
use super::settings::Context;

#[derive(clap::Args, Debug)]
pub struct SetRefreshTokenArgs {
    /// The refresh token (`Atzr|…`). Prefer AMAZON_REFRESH_TOKEN or standard input: arguments
    /// are visible to other users of the machine.
    token: Option<String>,
    /// Store it without checking it with Amazon.
    #[arg(long)]
    no_verify: bool,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct EnvArgs {
    /// The env file to update (created 0600 when missing).
    #[arg(long, value_name = "FILE")]
    write: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CallArgs {
    /// GET, POST, PUT, PATCH or DELETE.
    method: String,
    /// The path and query, e.g. /sellers/v1/marketplaceParticipations.
    path: String,
    /// A JSON body, or @FILE to read it from a file.
    #[arg(long)]
    body: Option<String>,
    /// Ads: the profile id sent as Amazon-Advertising-API-Scope [env: LWA_BROKER_PROFILE_ID].
    #[arg(long)]
    profile: Option<String>,
    /// AMC: the marketplace id (Amazon-Advertising-API-MarketplaceId); with --amc-advertiser.
    #[arg(long, requires = "amc_advertiser")]
    amc_marketplace: Option<String>,
    /// AMC: the AMC account id (Amazon-Advertising-API-AdvertiserId); with --amc-marketplace.
    #[arg(long, requires = "amc_marketplace")]
    amc_advertiser: Option<String>,
}

pub async fn set_refresh_token(context: &Context, args: SetRefreshTokenArgs) -> Result<(), Failure> {
    let token = match args
        .token
        .or_else(|| context.sources.get(None, "AMAZON_REFRESH_TOKEN"))
    {
        Some(token) => token,
        None => {
            if std::io::stdin().is_terminal() {
                eprintln!("Paste the refresh token (Atzr|…) and press Enter:");
            }
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .map_err(|e| Failure::other(format!("cannot read standard input: {e}")))?;
            input
        }
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(Failure::config(
            "no refresh token given (argument, AMAZON_REFRESH_TOKEN or standard input)",
        ));
    }
    if !token.starts_with("Atzr|") {
        return Err(Failure::config(
            "that is not an LWA refresh token: refresh tokens start with Atzr|",
        ));
    }
    let manager = context.manager()?;
    manager.set_refresh_token(RefreshToken::new(token)).await?;
    manager.set_label("api", context.api()?.as_str()).await?;
    manager.set_label("region", context.region()?.as_str()).await?;
    if !args.no_verify {
        manager.force_refresh().await?;
    }
    eprintln!("Stored the refresh token for account {:?}.", context.account);
    Ok(())
}

pub async fn token(context: &Context) -> Result<(), Failure> {
    let manager = context.manager()?;
    let token = manager.access_token().await?;
    println!("{}", token.expose());
    Ok(())
}

pub async fn refresh(context: &Context) -> Result<(), Failure> {
    let manager = context.manager()?;
    let outcome = manager.force_refresh().await?;
    let info = manager.info();
    eprintln!(
        "Refreshed account {:?}: {} left{}.",
        context.account,
        human_duration(info.expires_in_seconds.unwrap_or(0)),
        if outcome.refresh_token_changed {
            "; Amazon issued a new refresh token, stored"
        } else {
            ""
        }
    );
    Ok(())
}

pub fn status(context: &Context, args: StatusArgs) -> Result<(), Failure> {
    let names = match &context.args.account {
        Some(_) => vec![context.account.clone()],
        None => context.store.accounts()?,
    };
    let now = context.clock.now_ms();
    let buffer = context.refresh_buffer()?;
    let mut rows = Vec::new();
    for name in names {
        let tokens = context.store.load(&name)?.unwrap_or_default();
        let info = TokenInfo::of(&name, &tokens, now, buffer);
        rows.push((info, tokens.labels));
    }
    if args.json {
        let accounts: Vec<_> = rows
            .iter()
            .map(|(info, labels)| {
                json!({
                    "account": info.account,
                    "api": labels.get("api"),
                    "region": labels.get("region"),
                    "selling_partner_id": labels.get("selling_partner_id"),
                    "status": info.status,
                    "expires_in_seconds": info.expires_in_seconds,
                    "expires_at_ms": info.expires_at_ms,
                    "is_expired": info.is_expired,
                    "refresh_token_age_seconds": info.refresh_token_age_seconds,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&accounts).unwrap_or_default());
        return Ok(());
    }
    if rows.is_empty() {
        println!("No accounts stored. Run `lwa-broker login` or `lwa-broker set-refresh-token`.");
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|(info, labels)| {
            let dash = || "-".to_owned();
            [
                info.account.clone(),
                labels.get("api").cloned().unwrap_or_else(dash),
                labels.get("region").cloned().unwrap_or_else(dash),
                info.status.as_str().to_owned(),
                match info.expires_in_seconds {
                    Some(s) if s > 0 => format!("{} left", human_duration(s)),
                    Some(_) => "expired".into(),
                    None => dash(),
                },
                info.refresh_token_age_seconds
                    .map(human_duration)
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    let headers = [
        "ACCOUNT",
        "API",
        "REGION",
        "STATE",
        "ACCESS TOKEN",
        "REFRESH TOKEN AGE",
    ];
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(headers[i].len())
        })
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    println!("{}", line(headers.to_vec()));
    for row in &table {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    Ok(())
}

pub async fn logout(context: &Context) -> Result<(), Failure> {
    context.store.delete(&context.account)?;
    eprintln!("Forgot the tokens of account {:?}.", context.account);
    Ok(())
}

pub async fn env(context: &Context, args: EnvArgs) -> Result<(), Failure> {
    let manager = context.manager()?;
    let access = manager.access_token().await?;
    let refresh = manager.refresh_token().ok_or_else(|| {
        Failure::from(lwa::TokenError::NotAuthenticated {
            account: context.account.clone(),
        })
    })?;
    super::dotenv::write(
        &args.write,
        &[
            ("AMAZON_REFRESH_TOKEN", refresh.expose()),
            ("AMAZON_ACCESS_TOKEN", access.expose()),
        ],
    )
    .map_err(|e| Failure::other(format!("cannot write {}: {e}", args.write.display())))?;
    eprintln!(
        "Wrote AMAZON_REFRESH_TOKEN and AMAZON_ACCESS_TOKEN to {}.",
        args.write.display()
    );
    Ok(())
}

pub async fn call(context: &Context, args: CallArgs) -> Result<(), Failure> {
    let method = reqwest::Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Failure::config(format!("{:?} is not an HTTP method", args.method)))?;
    if !args.path.starts_with('/') || args.path.starts_with("//") || args.path.contains("..") {
        return Err(Failure::config(
            "the path must start with a single / and must not contain ..",
        ));
    }
    let manager = context.manager()?;
    let config = manager.config().clone();
    let headers = match (config.api, &args.amc_marketplace, &args.amc_advertiser) {
        (Api::SpApi, None, None) => manager.sp_api_headers().await?,
        (Api::SpApi, _, _) => return Err(Failure::config("--amc-* flags need an Ads account")),
        (Api::Ads, Some(marketplace), Some(advertiser)) => {
            manager.amc_headers(marketplace, advertiser).await?
        }
        (Api::Ads, _, _) => {
            let profile = context
                .sources
                .get(args.profile.as_deref(), "LWA_BROKER_PROFILE_ID");
            manager.ads_headers(profile.as_deref()).await?
        }
    };
    let body = match args.body.as_deref() {
        Some(file) if file.starts_with('@') => Some(
            std::fs::read(&file[1..])
                .map_err(|e| Failure::other(format!("cannot read {}: {e}", &file[1..])))?,
        ),
        Some(text) => Some(text.as_bytes().to_vec()),
        None => None,
    };
    let url = context.endpoints.url(config.api_host(), &args.path);
    let mut request = reqwest::Client::new().request(method, url).headers(headers);
    if let Some(body) = body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::temporary(format!("the request failed: {}", e.without_url())))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| Failure::temporary(format!("reading the response failed: {}", e.without_url())))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value) => println!("{}", serde_json::to_string_pretty(&value).unwrap_or(text)),
        Err(_) if text.is_empty() => {}
        Err(_) => println!("{text}"),
    }
    if status.is_success() {
        Ok(())
    } else if status.as_u16() == 429 || status.is_server_error() {
        Err(Failure::temporary(format!("Amazon answered HTTP {status}")))
    } else {
        Err(Failure::other(format!("Amazon answered HTTP {status}")))
    }
}

/// `1h 02m`, `5m 03s`, `3d 4h`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}
