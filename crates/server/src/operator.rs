//! The operator's admin token: `lwaadm_<64 hex>`, made by `lwa-broker admin-token`, shown once,
//! stored only as its SHA-256 in `meta`, compared in constant time. It authenticates the
//! operator's routes (`/admin/api/…`), never a tenant's.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::ApiError;
use crate::state::AppState;

/// The prefix of the admin token.
pub const ADMIN_TOKEN_PREFIX: &str = "lwaadm_";
/// The `meta` row holding the token's SHA-256 (lowercase hex).
pub const ADMIN_TOKEN_META: &str = "admin_token_sha256";

/// Makes a new admin token, replacing any earlier one (which stops working at once), and
/// returns it: the only time it exists in full.
pub async fn create_admin_token(state: &AppState) -> Result<Zeroizing<String>, ApiError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rng().fill(&mut bytes[..]);
    let token = Zeroizing::new(format!("{ADMIN_TOKEN_PREFIX}{}", hex::encode(&bytes[..])));
    let digest = hex::encode(Sha256::digest(token.as_bytes()));
    state.store.set_meta(ADMIN_TOKEN_META, &digest).await?;
    Ok(token)
}

/// The caller of an operator route, authenticated by `Authorization: Bearer <admin token>`.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(presented) = crate::auth::bearer(parts).filter(|t| !t.is_empty()) else {
            return Err(ApiError::unauthorized(
                "missing admin token: send Authorization: Bearer <admin token>",
            ));
        };
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let stored = state
            .store
            .meta(ADMIN_TOKEN_META)
            .await?
            .and_then(|h| hex::decode(h).ok())
            .and_then(|d| <[u8; 32]>::try_from(d).ok());
        match stored {
            Some(stored) if bool::from(presented.ct_eq(&stored)) => Ok(AdminAuth),
            Some(_) => Err(ApiError::unauthorized("invalid admin token")),
            None => Err(ApiError::unauthorized(
                "no admin token is set: the operator makes one with `lwa-broker admin-token`",
            )),
        }
    }
}
