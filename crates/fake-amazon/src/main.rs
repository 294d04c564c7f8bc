//! `fake-amazon`: runs the fake on a fixed address and prints its default principals.

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use fake_amazon::{FakeAmazon, FakeConfig, Quirks, defaults};

/// A strict fake of Login with Amazon, the Selling Partner API, the Ads API and AMC.
#[derive(Debug, Parser)]
#[command(name = "fake-amazon", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8900")]
    listen: SocketAddr,
    /// Consent pages approve at once with the default principal and redirect immediately.
    #[arg(long)]
    auto_approve: bool,
    /// Lifetime of LWA access tokens, seconds.
    #[arg(long, default_value_t = 3600)]
    access_token_ttl: u64,
    /// Extra redirect URI registered on the default apps (repeatable).
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// The refresh grant issues a new refresh token (the old one stays valid).
    #[arg(long)]
    rotate_refresh_tokens: bool,
    /// The `error` of LWA 500s: `server_error` or `ServerError`.
    #[arg(long, default_value = "server_error")]
    server_error_code: String,
    /// `expires_in` as a JSON string.
    #[arg(long)]
    expires_in_as_string: bool,
    /// SP-API apps may use api.amazon.co.uk and api.amazon.co.jp too.
    #[arg(long)]
    sp_api_on_regional_lwa_hosts: bool,
    /// Wrap the RDT response in `{"payload": …}`.
    #[arg(long)]
    rdt_payload_wrapper: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = FakeConfig {
        auto_approve: args.auto_approve,
        access_token_ttl: args.access_token_ttl,
        extra_redirect_uris: args.redirect_uris.clone(),
        quirks: Quirks {
            rotate_refresh_tokens: args.rotate_refresh_tokens,
            expires_in_as_string: args.expires_in_as_string,
            server_error_code: args.server_error_code.clone(),
            sp_api_on_regional_lwa_hosts: args.sp_api_on_regional_lwa_hosts,
            rdt_payload_wrapper: args.rdt_payload_wrapper,
            ..Quirks::default()
        },
    };
    let fake = FakeAmazon::bind(args.listen, config).await?;
    let redirect_uris: Vec<String> = defaults::DEFAULT_REDIRECT_URIS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(args.redirect_uris)
        .collect();
    let lines = [
        format!("fake-amazon listening on {}", fake.base_url()),
        format!("sp_api_client_id: {}", defaults::SP_API_CLIENT_ID),
        format!("sp_api_client_secret: {}", defaults::SP_API_CLIENT_SECRET),
        format!(
            "sp_api_previous_client_secret: {}",
            defaults::SP_API_PREVIOUS_CLIENT_SECRET
        ),
        format!("sp_api_application_id: {}", defaults::SP_API_APPLICATION_ID),
        format!("ads_client_id: {}", defaults::ADS_CLIENT_ID),
        format!("ads_client_secret: {}", defaults::ADS_CLIENT_SECRET),
        format!(
            "ads_previous_client_secret: {}",
            defaults::ADS_PREVIOUS_CLIENT_SECRET
        ),
        format!("redirect_uris: {}", redirect_uris.join(" ")),
        format!("seller_na: {}", defaults::SELLER_NA),
        format!("seller_eu: {}", defaults::SELLER_EU),
        format!("seller_fe: {}", defaults::SELLER_FE),
        format!("vendor_na: {}", defaults::VENDOR_NA),
        format!("advertiser: {}", defaults::ADVERTISER),
        format!("profile_na: {}", defaults::PROFILE_NA),
        format!("profile_eu: {}", defaults::PROFILE_EU),
        format!("profile_fe: {}", defaults::PROFILE_FE),
        format!("amc_instance: {}", defaults::AMC_INSTANCE),
        format!("amc_advertiser_id: {}", defaults::AMC_ADVERTISER_ID),
        format!("amc_marketplace_id: {}", defaults::AMC_MARKETPLACE_ID),
        format!("access_token_ttl: {}", args.access_token_ttl),
        format!("control_api: {}/__fake/", fake.base_url()),
    ];
    {
        let mut out = std::io::stdout().lock();
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
    }
    tokio::select! {
        _ = fake.serve_forever() => {}
        _ = shutdown_signal() => {}
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
