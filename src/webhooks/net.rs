//! The delivery HTTP client and its destination policy (SSRF protection): no redirects,
//! bounded timeout, and no private, loopback or link-local destination unless allowed,
//! checked for address literals and for every DNS answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::settings::{Cidr, WebhookSettings};

/// Which destinations may be called.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    allow_http_loopback: bool,
    cidrs: Vec<Cidr>,
    hosts: Vec<String>,
}

impl Policy {
    pub(crate) fn new(settings: &WebhookSettings) -> Self {
        let mut cidrs = Vec::new();
        let mut hosts = Vec::new();
        for entry in &settings.allowed_private {
            match Cidr::parse(entry) {
                Some(c) => cidrs.push(c),
                None => hosts.push(entry.to_ascii_lowercase()),
            }
        }
        Self {
            allow_http_loopback: settings.allow_http_loopback,
            cidrs,
            hosts,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `ip` may be called (for a request to `host`).
    pub(crate) fn ip_allowed(&self, host: &str, ip: IpAddr) -> bool {
        if is_public(ip) || self.host_allowed(host) || self.cidrs.iter().any(|c| c.contains(ip)) {
            return true;
        }
        self.allow_http_loopback && canonical(ip).is_loopback()
    }

    /// Check a subscription URL's shape and, for address literals and `localhost`, its
    /// destination. Host names are checked again at every delivery, after DNS.
    pub(crate) fn check_url(&self, raw: &str) -> Result<Url, String> {
        let url = Url::parse(raw.trim()).map_err(|e| format!("not a valid URL: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| "the URL has no host".to_owned())?
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in the URL are not allowed; use the signature".to_owned());
        }
        let loopback_host = host == "localhost"
            || host.ends_with(".localhost")
            || host
                .parse::<IpAddr>()
                .is_ok_and(|ip| canonical(ip).is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http_loopback && loopback_host => {}
            "http" => {
                return Err(
                    "must be https (http is accepted only for loopback, when enabled)".to_owned(),
                );
            }
            other => return Err(format!("scheme `{other}` is not supported; use https")),
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            if !self.ip_allowed(&host, ip) {
                return Err(format!(
                    "destination {ip} is a private, loopback or link-local address and is not allow-listed"
                ));
            }
        } else if loopback_host && !self.allow_http_loopback && !self.host_allowed(&host) {
            return Err(format!(
                "destination `{host}` is loopback and is not allow-listed"
            ));
        }
        Ok(url)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Globally routable, as far as the standard library can tell without unstable APIs.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 shared
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

/// A resolver that drops answers the policy refuses and fails when none is left, so a
/// public name pointing at a private address cannot be used to reach it.
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.ip_allowed(&host, a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(format!(
                    "destination `{host}` resolves only to private, loopback or link-local addresses that are not allow-listed"
                )
                .into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The client used for every delivery.
pub(crate) fn client(settings: &WebhookSettings, policy: Arc<Policy>) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("graphagent-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .build()
        .unwrap_or_else(|e| {
            // Building only fails when the TLS backend cannot initialise; keep a client
            // that still refuses redirects rather than panic.
            tracing::error!(error = %e, "webhook client configuration failed; using defaults");
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(loopback: bool, allowed: &[&str]) -> Policy {
        Policy::new(&WebhookSettings {
            allow_http_loopback: loopback,
            allowed_private: allowed.iter().map(|s| (*s).to_owned()).collect(),
            ..WebhookSettings::default()
        })
    }

    #[test]
    fn private_destinations_are_refused_unless_allowed() {
        let p = policy(false, &[]);
        assert!(p.check_url("https://example.com/hook").is_ok());
        assert!(p.check_url("http://example.com/hook").is_err());
        for bad in [
            "https://10.0.0.5/x",
            "https://192.168.1.1/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://localhost/x",
            "https://0.0.0.0/x",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
        ] {
            assert!(p.check_url(bad).is_err(), "{bad} should be refused");
        }
        let p = policy(false, &["10.0.0.0/8", "internal.example"]);
        assert!(p.check_url("https://10.1.2.3/x").is_ok());
        assert!(p.check_url("https://192.168.1.1/x").is_err());
        assert!(p.ip_allowed("internal.example", "192.168.1.1".parse().expect("ip")));
        let p = policy(true, &[]);
        assert!(p.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(p.check_url("http://localhost:9/x").is_ok());
        assert!(p.check_url("http://example.com/x").is_err());
        assert!(p.check_url("https://10.0.0.1/x").is_err());
    }
}
