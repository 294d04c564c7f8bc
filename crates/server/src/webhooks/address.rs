//! Where webhooks may go: http(s) URLs whose addresses are not internal (loopback, private,
//! link-local — the cloud metadata address 169.254.169.254 among them —, CGNAT, unique-local,
//! unspecified, multicast, broadcast), unless `LWA_BROKER_WEBHOOK_ALLOW_PRIVATE` is set.
//!
//! A URL's syntax (and an IP-literal host) is checked when it is set; a host name is checked
//! at every delivery, by the resolver the delivery client connects through
//! ([`GuardedResolver`]): it hands the connector only the addresses it checked, so a name that
//! resolves to a public address when checked and a private one a moment later (DNS rebinding)
//! cannot reach inside.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::error::ApiError;

/// True for an address a webhook must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(v6),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8 ("this network")
        || a == 0
        // 100.64.0.0/10, carrier-grade NAT
        || (a == 100 && (64..128).contains(&b))
        // 192.0.0.0/24, IETF protocol assignments; 240.0.0.0/4, reserved
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || a >= 240
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fc00::/7, unique local
        || (first & 0xfe00) == 0xfc00
        // fe80::/10, link-local
        || (first & 0xffc0) == 0xfe80
        // ::ffff:0:0/96 is handled as IPv4 by the caller; 64:ff9b::/96 embeds IPv4 too
        || (first == 0x0064 && ip.segments()[1] == 0xff9b && is_internal_v4(Ipv4Addr::from(
            (u32::from(ip.segments()[6]) << 16) | u32::from(ip.segments()[7]),
        )))
}

/// Parses a webhook URL: absolute http(s), a host, no user or password, at most 2048
/// characters; with `allow_private` off, an IP-literal host must not be internal. The 400
/// names the problem.
pub fn parse_webhook_url(text: &str, allow_private: bool) -> Result<Url, ApiError> {
    let bad = |why: &str| ApiError::bad_request("invalid_url", format!("url {why}"));
    if text.len() > 2048 {
        return Err(bad("is longer than 2048 characters"));
    }
    let url = Url::parse(text.trim()).map_err(|_| bad("must be an absolute http(s) URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry a user name or password"));
    }
    if !allow_private
        && let Some(ip) = literal_ip(&url)
        && is_internal(ip)
    {
        return Err(bad(
            "points to an internal address (loopback, private, link-local, …); set \
             LWA_BROKER_WEBHOOK_ALLOW_PRIVATE=1 on the server to allow it",
        ));
    }
    Ok(url)
}

/// The host of a URL when it is an IP address.
pub fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// The delivery client's resolver: resolves with the system, then keeps only the addresses
/// that may be reached. Refuses a name all of whose addresses are internal.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

/// Why a name was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to internal addresses, which webhooks may not reach")]
pub struct InternalAddress(String);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(Box::new(InternalAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip} is internal");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.2.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn urls() {
        for good in [
            "https://hooks.example.com/lwa",
            "http://hooks.example.com:8080/x?y=1",
            "https://8.8.8.8/h",
        ] {
            assert!(parse_webhook_url(good, false).is_ok(), "{good}");
        }
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://hooks.example.com/x",
            "file:///etc/passwd",
            "https://user:pw@hooks.example.com/x",
            "http://127.0.0.1:9000/h",
            "http://[::1]/h",
            "http://169.254.169.254/latest/meta-data",
            "http://10.1.2.3/h",
            "http://[fd00::1]/h",
        ] {
            assert!(parse_webhook_url(bad, false).is_err(), "{bad}");
        }
        assert!(parse_webhook_url("http://127.0.0.1:9000/h", true).is_ok());
        assert!(parse_webhook_url(&format!("https://x.example.com/{}", "a".repeat(2048)), true).is_err());
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_public_addresses() {
        let guarded = GuardedResolver { allow_private: false };
        let refused = guarded.resolve("localhost".parse().unwrap()).await;
        let Err(e) = refused else {
            panic!("localhost was not refused")
        };
        assert!(e.to_string().contains("internal addresses"), "{e}");
        let open = GuardedResolver { allow_private: true };
        let addrs: Vec<SocketAddr> = open
            .resolve("localhost".parse().unwrap())
            .await
            .map_err(|e| e.to_string())
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
