//! API keys: `lwak_<key id>_<secret>`, shown once, stored as SHA-256 of the secret, compared in
//! constant time. `/v1` takes `Authorization: Bearer KEY`; the seed-compatible endpoints also
//! `x-adb-access-token: KEY`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use lwa_store::{ApiKey, Tenant};
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::{ApiError, Shape};
use crate::ids;
use crate::state::AppState;

/// The prefix of every API key.
pub const KEY_PREFIX: &str = "lwak";

/// A newly made key: the only time its secret exists in full.
pub struct IssuedKey {
    pub record: ApiKey,
    /// The whole key (`lwak_<id>_<secret>`).
    pub key: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.record.id)
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Makes a key for a tenant (not yet stored).
pub fn issue_key(tenant_id: &str, name: Option<String>, scope: &str, now_ms: i64) -> IssuedKey {
    let mut id_bytes = [0u8; 8];
    let mut secret_bytes = Zeroizing::new([0u8; 32]);
    let mut rng = rand::rng();
    rng.fill(&mut id_bytes);
    rng.fill(&mut secret_bytes[..]);
    let id = hex::encode(id_bytes);
    let secret = Zeroizing::new(hex::encode(&secret_bytes[..]));
    IssuedKey {
        record: ApiKey {
            id: id.clone(),
            tenant_id: tenant_id.to_owned(),
            name,
            secret_hash: ids::hash(&secret),
            scope: scope.to_owned(),
            created_at_ms: now_ms,
            last_used_at_ms: None,
            revoked_at_ms: None,
        },
        key: Zeroizing::new(format!("{KEY_PREFIX}_{id}_{}", &*secret)),
    }
}

/// Splits a presented key into id and secret.
pub fn split_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(KEY_PREFIX)?.strip_prefix('_')?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Checks a key id and secret; the tenant and key on success.
pub async fn verify(
    state: &AppState,
    key_id: &str,
    secret: &str,
) -> Result<Option<(Arc<Tenant>, Arc<ApiKey>)>, ApiError> {
    let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let Some(found) = state.api_key(key_id).await? else {
        // Same work as a hit, so timing does not tell whether the id exists.
        let _ = presented.ct_eq(&[0u8; 32]);
        return Ok(None);
    };
    let matches = found
        .secret_digest
        .is_some_and(|stored| bool::from(presented.ct_eq(&stored)));
    if !matches || found.key.revoked_at_ms.is_some() {
        return Ok(None);
    }
    state.touch_key(&found).await;
    Ok(Some((found.tenant, found.key)))
}

/// The caller of a `/v1` route: a tenant, by its API key.
#[derive(Debug, Clone)]
pub struct TenantAuth {
    pub tenant: Arc<Tenant>,
    pub key: Arc<ApiKey>,
}

/// The caller of a seed-compatible route (`Authorization: Bearer` or `x-adb-access-token`).
#[derive(Debug, Clone)]
pub struct CompatAuth(pub TenantAuth);

pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

async fn authenticate(parts: &Parts, state: &AppState, compat: bool) -> Result<TenantAuth, ApiError> {
    let presented = bearer(parts).or_else(|| {
        compat
            .then(|| {
                parts
                    .headers
                    .get("x-adb-access-token")
                    .and_then(|v| v.to_str().ok())
            })
            .flatten()
            .map(str::trim)
    });
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized(if compat {
            "missing API key: send Authorization: Bearer <key> or x-adb-access-token: <key>"
        } else {
            "missing API key: send Authorization: Bearer <key>"
        }));
    };
    let Some((id, secret)) = split_key(presented) else {
        return Err(ApiError::unauthorized("invalid or revoked API key"));
    };
    match verify(state, id, secret).await? {
        Some((tenant, key)) => Ok(TenantAuth { tenant, key }),
        None => Err(ApiError::unauthorized("invalid or revoked API key")),
    }
}

impl FromRequestParts<AppState> for TenantAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, false).await
    }
}

impl FromRequestParts<AppState> for CompatAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state, true)
            .await
            .map(CompatAuth)
            .map_err(|e| e.shape(Shape::Compat))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_and_hash() {
        let issued = issue_key("ten_1", None, "full", 0);
        let (id, secret) = split_key(&issued.key).unwrap();
        assert_eq!(id, issued.record.id);
        assert_eq!(ids::hash(secret), issued.record.secret_hash);
        assert!(!issued.record.secret_hash.contains(secret));
        assert!(format!("{issued:?}").contains("[redacted]"));
        assert!(split_key("lwak__x").is_none());
        assert!(split_key("other_a_b").is_none());
    }
}
