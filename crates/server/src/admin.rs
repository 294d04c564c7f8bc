//! Operator actions shared by the CLI and the server: tenants and API keys.

use lwa_store::{ApiKey, Tenant};

use crate::auth::{IssuedKey, issue_key};
use crate::error::ApiError;
use crate::ids;
use crate::onboarding::redirect_url::RedirectOrigin;
use crate::state::AppState;

/// What `tenants create` takes.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    pub name: String,
    pub redirect_origins: Vec<String>,
    pub sp_app: Option<String>,
    pub ads_app: Option<String>,
    pub webhook_url: Option<String>,
}

/// Creates a tenant and its first API key.
pub async fn create_tenant(state: &AppState, new: NewTenant) -> Result<(Tenant, IssuedKey), ApiError> {
    if new.name.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_tenant", "a tenant needs a name"));
    }
    if new.redirect_origins.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_tenant",
            "a tenant needs at least one redirect origin",
        ));
    }
    let mut origins = Vec::new();
    for origin in &new.redirect_origins {
        let parsed = RedirectOrigin::parse(origin).map_err(|e| {
            ApiError::bad_request("invalid_tenant", format!("redirect origin {origin:?}: {e}"))
        })?;
        origins.push(parsed.as_str().to_owned());
    }
    for (name, kind) in [(&new.sp_app, lwa::Api::SpApi), (&new.ads_app, lwa::Api::Ads)] {
        if let Some(name) = name
            && state.app(name).filter(|a| a.kind == kind).is_none()
        {
            return Err(ApiError::bad_request(
                "invalid_tenant",
                format!("no {} app named {name:?} in the configuration", kind.as_str()),
            ));
        }
    }
    let now = state.now_ms();
    let tenant = Tenant {
        id: ids::new_id("ten"),
        name: new.name.trim().to_owned(),
        redirect_origins: origins,
        sp_app: new.sp_app,
        ads_app: new.ads_app,
        webhook_url: new.webhook_url,
        signing_secret: None,
        created_at_ms: now,
    };
    state.store.insert_tenant(&tenant).await?;
    let key = create_key(state, &tenant.id, Some("first key".into()), "full").await?;
    Ok((tenant, key))
}

/// Makes and stores a new key for a tenant.
pub async fn create_key(
    state: &AppState,
    tenant_id: &str,
    name: Option<String>,
    scope: &str,
) -> Result<IssuedKey, ApiError> {
    if !matches!(scope, "full" | "proxy-only") {
        return Err(ApiError::bad_request(
            "invalid_scope",
            "key scope must be full or proxy-only",
        ));
    }
    if state.store.tenant(tenant_id).await?.is_none() {
        return Err(ApiError::not_found(format!("no tenant {tenant_id}")));
    }
    let issued = issue_key(tenant_id, name, scope, state.now_ms());
    state.store.insert_api_key(&issued.record).await?;
    Ok(issued)
}

/// A tenant's keys.
pub async fn list_keys(state: &AppState, tenant_id: &str) -> Result<Vec<ApiKey>, ApiError> {
    Ok(state.store.api_keys(tenant_id).await?)
}

/// Revokes a key; false when unknown or already revoked.
pub async fn revoke_key(state: &AppState, key_id: &str) -> Result<bool, ApiError> {
    let revoked = state.store.revoke_api_key(key_id, state.now_ms()).await?;
    state.forget_key(key_id);
    Ok(revoked)
}
