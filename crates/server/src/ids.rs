//! Random identifiers, one-time secrets and their hashes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// `prefix_` + 20 random lowercase letters and digits (~103 bits), e.g. `conn_k2v…`.
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..20)
        .map(|_| rng.sample(Alphanumeric) as char)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    format!("{prefix}_{tail}")
}

/// 32 random bytes, base64url without padding (256 bits): states, claim codes, link tokens.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a value, lowercase hex: how one-time secrets and key secrets are stored.
pub fn hash(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_are_random_and_well_formed() {
        let a = new_id("conn");
        assert!(a.starts_with("conn_") && a.len() == 25, "{a}");
        assert!(
            a[5..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(new_id("conn"), a);
        let s = new_secret();
        assert_eq!(s.len(), 43);
        assert_ne!(new_secret(), s);
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
