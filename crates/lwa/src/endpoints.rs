//! Where each Amazon host really is: Amazon itself, or a fake standing in for it.

use std::collections::HashMap;
use std::sync::Arc;

/// Resolves an Amazon host and path to the URL to call.
///
/// By default every host is reached over `https://{host}`. [`Endpoints::rebased`] sends every
/// host to one base URL with the host as the first path segment (`{base}/{host}{path}`), which is
/// how `fake-amazon` tells Seller Central from Vendor Central and `api.amazon.com` from
/// `api.amazon.co.uk` on a single listener. [`Endpoints::with_host`] overrides one host.
///
/// ```
/// use lwa::Endpoints;
/// let amazon = Endpoints::amazon();
/// assert_eq!(amazon.url("api.amazon.com", "/auth/o2/token"), "https://api.amazon.com/auth/o2/token");
/// let fake = Endpoints::rebased("http://127.0.0.1:9000/");
/// assert_eq!(
///     fake.url("api.amazon.co.uk", "/auth/o2/token"),
///     "http://127.0.0.1:9000/api.amazon.co.uk/auth/o2/token"
/// );
/// let one = Endpoints::amazon().with_host("api.amazon.com", "http://127.0.0.1:1234");
/// assert_eq!(one.url("api.amazon.com", "/auth/o2/token"), "http://127.0.0.1:1234/auth/o2/token");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    base: Option<Arc<str>>,
    hosts: Arc<HashMap<String, String>>,
}

impl Endpoints {
    /// The real Amazon: `https://{host}`.
    pub fn amazon() -> Self {
        Self::default()
    }

    /// Every host under one base URL, as `{base}/{host}{path}` (the `fake-amazon` layout).
    pub fn rebased(base: &str) -> Self {
        Self {
            base: Some(base.trim_end_matches('/').into()),
            hosts: Arc::default(),
        }
    }

    /// Sends one host to `base` (`{base}{path}`), leaving the others as they were.
    pub fn with_host(mut self, host: &str, base: &str) -> Self {
        Arc::make_mut(&mut self.hosts)
            .insert(host.to_ascii_lowercase(), base.trim_end_matches('/').to_owned());
        self
    }

    /// The base every host is rebased under, if any.
    pub fn rebased_base(&self) -> Option<&str> {
        self.base.as_deref()
    }

    /// The origin to use for `host`, without a trailing slash.
    pub fn origin(&self, host: &str) -> String {
        if let Some(base) = self.hosts.get(&host.to_ascii_lowercase()) {
            return base.clone();
        }
        match &self.base {
            Some(base) => format!("{base}/{host}"),
            None => format!("https://{host}"),
        }
    }

    /// The URL for `path` (which starts with `/`) on `host`.
    pub fn url(&self, host: &str, path: &str) -> String {
        format!("{}{}", self.origin(host), path)
    }
}
