//! Stand-in tokens: what `/auth/o2/token` hands a proxy-only key instead of an Amazon token, and
//! what the SDK's own `createRestrictedDataToken` gets back through the proxy.
//!
//! A stand-in is `lwas_` followed by a value sealed under the broker's master key (the same AEAD
//! as every stored token, identity `stand-in`/`token`), holding the key id, tenant, connection,
//! expiry, the tenant-held secret when the connection has one, and for a stand-in RDT the
//! canonical resource set. So it:
//! - names its connection, and is useless anywhere but a broker holding the master key;
//! - cannot be forged or altered (the seal is authenticated);
//! - expires with the Amazon token it stands for;
//! - stops working with its API key (the key is checked on every use).
//!
//! Its prefix differs from API keys (`lwak_`) and Amazon's tokens (`Atza|`, `Atz.sprdt|`).
//!
//! ```
//! use lwa_server::proxy::standin::is_stand_in;
//! assert!(is_stand_in("lwas_lwa1.abc.def"));
//! assert!(!is_stand_in("Atza|IwEBIexample"));
//! ```

use lwa::restricted::RestrictedResource;
use serde::{Deserialize, Serialize};

use crate::sealing::{Sealer, TokenSecret};
use crate::vend::RdtRequest;

/// The prefix of every stand-in token.
pub const STAND_IN_PREFIX: &str = "lwas_";

const OWNER: &str = "stand-in";
const FIELD: &str = "token";

/// Whether a presented token is a stand-in (by its prefix only).
pub fn is_stand_in(token: &str) -> bool {
    token.starts_with(STAND_IN_PREFIX)
}

/// What a stand-in stands for.
#[derive(Clone)]
pub struct StandIn {
    /// The API key it was issued to.
    pub key_id: String,
    pub tenant_id: String,
    pub connection_id: String,
    /// When it stops working (the Amazon token's expiry).
    pub expires_at_ms: i64,
    /// The connection's tenant-held secret, when it has one.
    pub secret: Option<TokenSecret>,
    /// For a stand-in RDT: the canonical request it covers.
    pub rdt: Option<RdtRequest>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("key_id", &self.key_id)
            .field("tenant_id", &self.tenant_id)
            .field("connection_id", &self.connection_id)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("rdt", &self.rdt.is_some())
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    k: String,
    t: String,
    c: String,
    e: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    r: Option<Vec<RestrictedResource>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
}

/// Why a stand-in is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StandInError {
    #[error("the stand-in token is not one this broker issued")]
    Invalid,
    #[error("the stand-in token has expired; ask /auth/o2/token for a new one")]
    Expired,
}

/// Seals a stand-in.
pub fn issue(sealer: &Sealer, stand_in: &StandIn) -> String {
    let sealed = Sealed {
        k: stand_in.key_id.clone(),
        t: stand_in.tenant_id.clone(),
        c: stand_in.connection_id.clone(),
        e: stand_in.expires_at_ms,
        s: stand_in.secret.as_ref().map(|s| s.expose().to_owned()),
        r: stand_in.rdt.as_ref().map(|r| r.resources.clone()),
        a: stand_in.rdt.as_ref().and_then(|r| r.target_application.clone()),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_string(&sealed).unwrap_or_default());
    format!("{STAND_IN_PREFIX}{}", sealer.seal(OWNER, FIELD, &text, None))
}

/// Opens a stand-in and checks its expiry against `now_ms`.
pub fn open(sealer: &Sealer, token: &str, now_ms: i64) -> Result<StandIn, StandInError> {
    let sealed = token.strip_prefix(STAND_IN_PREFIX).ok_or(StandInError::Invalid)?;
    let plain = sealer
        .open(OWNER, FIELD, sealed, None)
        .map_err(|_| StandInError::Invalid)?;
    let parsed: Sealed = serde_json::from_str(&plain).map_err(|_| StandInError::Invalid)?;
    if parsed.e <= now_ms {
        return Err(StandInError::Expired);
    }
    let secret = match parsed.s {
        Some(s) => Some(TokenSecret::parse(&s).ok_or(StandInError::Invalid)?),
        None => None,
    };
    Ok(StandIn {
        key_id: parsed.k,
        tenant_id: parsed.t,
        connection_id: parsed.c,
        expires_at_ms: parsed.e,
        secret,
        rdt: parsed.r.map(|resources| RdtRequest {
            resources,
            target_application: parsed.a,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lwa_seal::{Keyring, MasterKey};

    #[test]
    fn round_trip_expiry_and_tampering() {
        let sealer = Sealer::new(Keyring::new(MasterKey::generate()));
        let s = StandIn {
            key_id: "k1".into(),
            tenant_id: "t1".into(),
            connection_id: "conn_1".into(),
            expires_at_ms: 2_000,
            secret: None,
            rdt: None,
        };
        let token = issue(&sealer, &s);
        assert!(is_stand_in(&token));
        let back = open(&sealer, &token, 1_000).unwrap();
        assert_eq!(back.connection_id, "conn_1");
        assert_eq!(back.key_id, "k1");
        assert_eq!(open(&sealer, &token, 2_000).unwrap_err(), StandInError::Expired);
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            open(&sealer, &tampered, 1_000).unwrap_err(),
            StandInError::Invalid
        );
        let other = Sealer::new(Keyring::new(MasterKey::generate()));
        assert_eq!(open(&other, &token, 1_000).unwrap_err(), StandInError::Invalid);
        let secret = "s".repeat(40);
        let with_secret = StandIn {
            secret: TokenSecret::parse(&secret),
            ..s
        };
        let token = issue(&sealer, &with_secret);
        assert!(!token.contains(&secret));
        let back = open(&sealer, &token, 1_000).unwrap();
        assert_eq!(back.secret.as_ref().map(|s| s.expose()), Some(secret.as_str()));
        assert!(!format!("{back:?}").contains(&secret));
    }
}
