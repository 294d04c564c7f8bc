//! `apps …` (the server's Amazon apps and their LWA client secrets) and `admin-token`.

use std::io::{IsTerminal, Read};

use lwa_server::apps::{
    self, NewSecret, SECRET_RELOAD_MS, SetOutcome, parse_client_secret, parse_notification,
};
use lwa_server::time::rfc3339;

use super::Failure;
use super::server::{ServerArgs, api_failure, state};
use super::settings::CommonArgs;

/// `apps …`.
#[derive(clap::Subcommand, Debug)]
pub enum AppsCommand {
    /// List the apps with their client secrets' ages, which is in use, the previous secret's
    /// expiry and the days left before Amazon's 180-day rotation deadline (never a secret).
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Set an app's new client secret from standard input: the bare secret, or Amazon's
    /// APPLICATION_OAUTH_CLIENT_NEW_SECRET notification JSON (its clientId must be the app's).
    /// Running servers use it within 30 s, without a restart.
    SetSecret {
        /// The app's name in the configuration
        #[arg(long)]
        app: String,
    },
    /// Ask Amazon to rotate an SP-API app's client secret (rotateApplicationClientSecret). The
    /// new secret arrives as a notification; feed it to `apps set-secret`.
    RotateSecret {
        /// The app's name in the configuration
        #[arg(long)]
        app: String,
        /// The SP-API region whose endpoint is called (na, eu, fe)
        #[arg(long, default_value = "na")]
        region: String,
    },
}

/// `apps …`.
pub async fn run(common: &CommonArgs, server: &ServerArgs, command: AppsCommand) -> Result<(), Failure> {
    let state = state(common, server).await?;
    match command {
        AppsCommand::List { json } => {
            let list = apps::secret_status(&state).await.map_err(api_failure)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&list).map_err(|e| Failure::other(e.to_string()))?
                );
            } else {
                println!(
                    "{:<14} {:<7} {:<42} {:>8} {:<28} {:<21} {:>13}",
                    "APP", "KIND", "CLIENT ID", "AGE (D)", "IN USE", "PREVIOUS UNTIL", "DEADLINE (D)"
                );
                for a in list {
                    println!(
                        "{:<14} {:<7} {:<42} {:>8} {:<28} {:<21} {:>13}",
                        a.name,
                        a.kind,
                        a.client_id,
                        a.secret_age_days,
                        a.in_use,
                        a.previous_expires_at.as_deref().unwrap_or("-"),
                        a.days_until_deadline
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        AppsCommand::SetSecret { app } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "paste the new client secret or Amazon's APPLICATION_OAUTH_CLIENT_NEW_SECRET notification, then Ctrl-D"
                );
            }
            let mut input = zeroize::Zeroizing::new(String::new());
            stdin
                .lock()
                .read_to_string(&mut input)
                .map_err(|e| Failure::other(format!("cannot read standard input: {e}")))?;
            let text = input.trim();
            if text.is_empty() {
                return Err(Failure::config(
                    "give the new client secret, or Amazon's APPLICATION_OAUTH_CLIENT_NEW_SECRET notification JSON, on standard input",
                ));
            }
            let reload_s = SECRET_RELOAD_MS / 1000;
            if text.starts_with('{') {
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    Failure::config(format!(
                        "standard input starts with {{ but is not valid JSON (line {}, column {})",
                        e.line(),
                        e.column()
                    ))
                })?;
                let notification = parse_notification(&value).map_err(api_failure)?;
                if !matches!(notification, apps::SecretNotification::NewSecret { .. }) {
                    return Err(Failure::config(format!(
                        "this is an {} notification, which carries no secret; set-secret takes {}",
                        apps::SECRET_EXPIRY_NOTIFICATION,
                        apps::NEW_SECRET_NOTIFICATION
                    )));
                }
                let outcome = apps::apply_notification(&state, notification, Some(&app))
                    .await
                    .map_err(api_failure)?;
                match outcome.previous_secret_valid_until {
                    Some(until) => println!(
                        "app {}: the new client secret from Amazon's notification is set; the previous one stays a fallback until {until}. Running servers use it within {reload_s} s.",
                        outcome.app
                    ),
                    None => println!(
                        "app {}: that secret is already the newest; nothing changed",
                        outcome.app
                    ),
                }
            } else {
                if text.lines().count() > 1 {
                    return Err(Failure::config(
                        "standard input has several lines: give the secret alone on one line, or the notification JSON",
                    ));
                }
                let secret = parse_client_secret(text).map_err(api_failure)?;
                let outcome = apps::set_secret(
                    &state,
                    &app,
                    NewSecret {
                        secret,
                        old_secret_expires_at_ms: None,
                    },
                )
                .await
                .map_err(api_failure)?;
                match outcome {
                    SetOutcome::SecretSet {
                        previous_expires_at_ms,
                    } => println!(
                        "app {app}: the new client secret is set; the previous one stays a fallback until {}. Running servers use it within {reload_s} s.",
                        rfc3339(previous_expires_at_ms)
                    ),
                    SetOutcome::AlreadyCurrent => {
                        println!("app {app}: that secret is already the newest; nothing changed")
                    }
                }
            }
        }
        AppsCommand::RotateSecret { app, region } => {
            let region = lwa::Region::parse(&region).map_err(|e| Failure::config(e.to_string()))?;
            apps::rotate_secret_at_amazon(&state, &app, region)
                .await
                .map_err(|e| {
                    if e.status.is_client_error() {
                        Failure::config(e.message)
                    } else {
                        Failure::temporary(e.message)
                    }
                })?;
            println!(
                "Amazon accepted the rotation of app {app}'s client secret.\n\
                 The new secret is not in Amazon's answer: Amazon sends it as an\n\
                 {} notification to the SQS queue registered for\n\
                 \"Application Client New Secret\" in the developer console (Notification Preferences).\n\
                 Give that notification's JSON to the broker, either\n  \
                 lwa-broker apps set-secret --app {app} < notification.json\n\
                 or POST it to /admin/api/app-secret-notifications with Authorization: Bearer <admin token>.\n\
                 Amazon keeps accepting the old secret for 7 days; the broker uses the new one as soon as it has it.",
                apps::NEW_SECRET_NOTIFICATION
            );
        }
    }
    Ok(())
}

/// `admin-token`: a new operator token, printed once (any earlier one stops working).
pub async fn admin_token(common: &CommonArgs, server: &ServerArgs) -> Result<(), Failure> {
    let state = state(common, server).await?;
    let token = lwa_server::operator::create_admin_token(&state)
        .await
        .map_err(api_failure)?;
    println!(
        "admin token: {}\n(shown only now; it replaces any earlier admin token. Send it as Authorization: Bearer <admin token> to /admin/api/…)",
        &*token
    );
    Ok(())
}
