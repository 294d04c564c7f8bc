//! Types for values that must never reach a log line: their `Debug` prints `[redacted]`, they
//! have no `Display` and no `==`, and their memory is wiped when dropped.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

macro_rules! secret_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cloning is cheap (a reference count); the value is wiped when the last clone drops.
        #[derive(Clone)]
        pub struct $name(Arc<Zeroizing<String>>);

        impl $name {
            /// Wraps a value.
            pub fn new(value: impl Into<String>) -> Self {
                Self(Arc::new(Zeroizing::new(value.into())))
            }

            /// The value itself. Call this only where the value leaves for Amazon, a sealed
            /// store, or the one program that asked for it.
            pub fn expose(&self) -> &str {
                self.0.as_str()
            }

            /// Compares with another value in time independent of where they differ.
            pub fn same_as(&self, other: &str) -> bool {
                constant_time_eq(self.expose().as_bytes(), other.as_bytes())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self::new(value)
            }
        }
    };
}

secret_type!(
    /// An LWA access token (`Atza|…`) or a Restricted Data Token (`Atz.sprdt|…`).
    AccessToken
);
secret_type!(
    /// An LWA refresh token (`Atzr|…`).
    RefreshToken
);
secret_type!(
    /// An LWA client secret (`amzn1.oa2-cs.v1.…`).
    ClientSecret
);
secret_type!(
    /// An authorization code from a consent redirect (`spapi_oauth_code` or `code`).
    AuthorizationCode
);
secret_type!(
    /// A PKCE code verifier.
    CodeVerifier
);

/// Equality of two byte strings without an early exit on the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = AccessToken::new("Atza|very-secret");
        let shown = format!("{token:?} {:?}", Some(RefreshToken::new("Atzr|x")));
        assert!(!shown.contains("very-secret"));
        assert!(!shown.contains("Atzr|x"));
        assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
        assert!(token.same_as("Atza|very-secret"));
        assert!(!token.same_as("Atza|very-secreT"));
    }
}
