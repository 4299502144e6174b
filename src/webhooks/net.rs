//! The delivery HTTP client and the destination policy (SSRF protection): no redirects,
//! bounded timeout, and only public unicast destinations (see `destination`) unless
//! allow-listed, for address literals and for every DNS answer of every attempt.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::destination::{self, Refusal};
use super::settings::{WebhookSettings, parse_net};

/// At most this many refused addresses are named in one error.
const NAMED_ANSWERS: usize = 4;

/// Which destinations may be called.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    allow_http_loopback: bool,
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

/// Lower case, no brackets, no trailing dot: `Localhost.` and `localhost` are one name.
fn normalize_host(host: &str) -> String {
    host.trim_matches(|c| c == '[' || c == ']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `localhost` and `*.localhost`, which always mean this machine (RFC 6761, 6.3).
fn is_loopback_name(host: &str) -> bool {
    let host = normalize_host(host);
    host == "localhost" || host.ends_with(".localhost")
}

/// Where a loopback name goes, without asking DNS (RFC 6761, 6.3).
const LOOPBACK_ANSWERS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::LOCALHOST),
    IpAddr::V6(Ipv6Addr::LOCALHOST),
];

/// A destination the policy refuses: the URL's host and each refused address with the
/// range that refused it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) struct RefusedDestination {
    host: String,
    refused: Vec<(IpAddr, Refusal)>,
}

impl std::fmt::Display for RefusedDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let [(ip, refusal)] = self.refused.as_slice()
            && normalize_host(&self.host).parse::<IpAddr>().ok() == Some(*ip)
        {
            return write!(f, "destination {ip} refused: {refusal}");
        }
        write!(f, "destination {} refused: ", self.host)?;
        for (i, (ip, refusal)) in self.refused.iter().take(NAMED_ANSWERS).enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(f, "{sep}{ip} is {refusal}")?;
        }
        match self.refused.len().saturating_sub(NAMED_ANSWERS) {
            0 => Ok(()),
            more => write!(f, "; and {more} more"),
        }
    }
}

/// Why a subscription URL cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum UrlError {
    /// Not a URL the host calls (scheme, credentials, no host).
    #[error("{0}")]
    Invalid(String),
    /// An address literal the policy refuses.
    #[error(transparent)]
    Refused(RefusedDestination),
}

/// A host's addresses, screened by the policy.
#[derive(Debug, Default)]
pub(crate) struct Screened {
    pub(crate) allowed: Vec<SocketAddr>,
    pub(crate) refused: Vec<(IpAddr, Refusal)>,
}

impl Screened {
    /// The refusal of `host`, when any of its addresses was refused.
    pub(crate) fn refusal(self, host: &str) -> Option<RefusedDestination> {
        (!self.refused.is_empty()).then(|| RefusedDestination {
            host: host.to_owned(),
            refused: self.refused,
        })
    }
}

impl Policy {
    pub(crate) fn new(settings: &WebhookSettings) -> Self {
        let mut nets = Vec::new();
        let mut hosts = Vec::new();
        for entry in &settings.allowed_private {
            match parse_net(entry) {
                Some(net) => nets.push(net),
                None => hosts.push(normalize_host(entry)),
            }
        }
        Self {
            allow_http_loopback: settings.allow_http_loopback,
            nets,
            hosts,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
    }

    /// The allow-list covers the address, or the IPv4 address it was judged by.
    fn net_allowed(&self, ip: IpAddr, refusal: &Refusal) -> bool {
        let judged = refusal.judged_v4().map(IpAddr::V4);
        self.nets
            .iter()
            .any(|n| n.contains(&ip) || judged.is_some_and(|v4| n.contains(&v4)))
    }

    /// The one decision for every destination address: URL literals and each DNS
    /// answer, when subscribing and on every attempt.
    pub(crate) fn check_ip(&self, host: &str, ip: IpAddr) -> Result<(), Refusal> {
        let Err(refusal) = destination::check(ip) else {
            return Ok(());
        };
        if self.host_allowed(host)
            || self.net_allowed(ip, &refusal)
            || (self.allow_http_loopback && destination::is_loopback(ip))
        {
            return Ok(());
        }
        Err(refusal)
    }

    /// Check a subscription URL's shape and, when its host is an address literal, the
    /// address. Host names are checked by [`resolve`](Self::resolve), after DNS.
    pub(crate) fn check_url(&self, raw: &str) -> Result<Url, UrlError> {
        let invalid = |m: &str| UrlError::Invalid(m.to_owned());
        let url = Url::parse(raw.trim())
            .map_err(|e| UrlError::Invalid(format!("not a valid URL: {e}")))?;
        let host = normalize_host(
            url.host_str()
                .ok_or_else(|| invalid("the URL has no host"))?,
        );
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "credentials in the URL are not allowed; use the signature",
            ));
        }
        let literal = url
            .domain()
            .is_none()
            .then(|| host.parse::<IpAddr>().ok())
            .flatten();
        let loopback_host =
            literal.map_or_else(|| is_loopback_name(&host), destination::is_loopback);
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http_loopback && loopback_host => {}
            "http" => {
                return Err(invalid(
                    "must be https (http is accepted only for loopback, when enabled)",
                ));
            }
            other => {
                return Err(UrlError::Invalid(format!(
                    "scheme `{other}` is not supported; use https"
                )));
            }
        }
        if let Some(ip) = literal {
            self.check_ip(&host, ip).map_err(|refusal| {
                UrlError::Refused(RefusedDestination {
                    host: host.clone(),
                    refused: vec![(ip, refusal)],
                })
            })?;
        }
        Ok(url)
    }

    /// Resolve `host` and screen every answer. Loopback names are answered here
    /// without asking DNS, so they are judged as what they are.
    pub(crate) async fn resolve(&self, host: &str, port: u16) -> io::Result<Screened> {
        let answers: Vec<SocketAddr> = if is_loopback_name(host) {
            LOOPBACK_ANSWERS
                .iter()
                .map(|ip| SocketAddr::new(*ip, port))
                .collect()
        } else {
            tokio::net::lookup_host((host, port)).await?.collect()
        };
        let mut screened = Screened::default();
        for addr in answers {
            match self.check_ip(host, addr.ip()) {
                Ok(()) => screened.allowed.push(addr),
                Err(refusal) => screened.refused.push((addr.ip(), refusal)),
            }
        }
        Ok(screened)
    }
}

/// The policy refusal in `error`'s source chain, when that is why a request failed.
pub(crate) fn refusal_in<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e RefusedDestination> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(refused) = e.downcast_ref::<RefusedDestination>() {
            return Some(refused);
        }
        next = e.source();
    }
    None
}

/// A resolver that drops answers the policy refuses and fails with
/// [`RefusedDestination`] when none is left, so a public name pointing at a private
/// address cannot be used to reach it.
struct GuardedResolver {
    policy: Arc<Policy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let screened = policy.resolve(&host, 0).await?;
            if !screened.allowed.is_empty() {
                let addrs: Addrs = Box::new(screened.allowed.into_iter());
                return Ok(addrs);
            }
            match screened.refusal(&host) {
                Some(refused) => Err(Box::new(refused) as _),
                None => Err(Box::new(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{host}` has no addresses"),
                )) as _),
            }
        })
    }
}

/// The client used for every delivery.
pub(crate) fn client(settings: &WebhookSettings, policy: Arc<Policy>) -> reqwest::Client {
    let resolver = Arc::new(GuardedResolver { policy });
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(concat!("graphagent-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(resolver.clone())
        // Through a proxy, the proxy resolves the name and the policy never sees an
        // address: `HTTP(S)_PROXY` in the environment would silently switch it off.
        .no_proxy()
        .build()
        .unwrap_or_else(|e| {
            // Building only fails when the TLS backend cannot initialise; keep a client
            // that still refuses redirects and guards DNS rather than panic.
            tracing::error!(error = %e, "webhook client configuration failed; using defaults");
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .dns_resolver(resolver)
                .no_proxy()
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

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn url_shape_and_literals_are_checked() {
        let p = policy(false, &[]);
        assert!(p.check_url("https://example.com/hook").is_ok());
        assert!(p.check_url("https://[2606:4700:4700::1111]/hook").is_ok());
        for bad in [
            "http://example.com/hook",
            "ftp://example.com/x",
            "https://user:pw@example.com/x",
            "not a url",
        ] {
            assert!(
                matches!(p.check_url(bad), Err(UrlError::Invalid(_))),
                "{bad} should be invalid"
            );
        }
        for refused in [
            "https://10.0.0.5/x",
            "https://192.168.1.1/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://169.254.169.254/latest",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://0.0.0.0/x",
            "https://100.64.0.1/x",
            "https://[::127.0.0.1]/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://[2002:a9fe:a9fe::]/x",
            "https://[::ffff:0:7f00:1]/x",
            "https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/x",
            // The URL standard reads these as 127.0.0.1.
            "https://2130706433/x",
            "https://0x7f.1/x",
        ] {
            assert!(
                matches!(p.check_url(refused), Err(UrlError::Refused(_))),
                "{refused} should be refused"
            );
        }
        // Host names pass here; they are judged after DNS.
        assert!(p.check_url("https://localhost/x").is_ok());
    }

    #[test]
    fn refusals_name_the_destination_and_the_range() {
        let p = policy(false, &[]);
        let e = p
            .check_url("https://[::127.0.0.1]:8443/x")
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "destination ::7f00:1 refused: IPv4-compatible (deprecated) (::/96, RFC 4291) carrying 127.0.0.1"
        );
        let many = RefusedDestination {
            host: "internal.example".to_owned(),
            refused: (1..=6u8)
                .map(|i| {
                    let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
                    (a, p.check_ip("internal.example", a).expect_err("private"))
                })
                .collect(),
        };
        let text = many.to_string();
        assert!(
            text.starts_with(
                "destination internal.example refused: 10.0.0.1 is private-use (10.0.0.0/8, RFC 1918); 10.0.0.2 is"
            ),
            "{text}"
        );
        assert!(text.ends_with("; and 2 more"), "{text}");
    }

    #[test]
    fn the_allow_list_and_the_loopback_switch_open_only_what_they_name() {
        let p = policy(false, &["10.0.0.0/8", "Internal.Example.", "fd00::1"]);
        assert!(p.check_ip("x", ip("10.1.2.3")).is_ok());
        // The same IPv4 destination in the forms that are judged by it.
        assert!(p.check_ip("x", ip("::ffff:10.1.2.3")).is_ok());
        assert!(p.check_ip("x", ip("64:ff9b::a01:203")).is_ok());
        // Not the forms refused as a whole range.
        assert!(p.check_ip("x", ip("2002:a01:203::")).is_err());
        assert!(p.check_ip("x", ip("::10.1.2.3")).is_err());
        assert!(p.check_ip("x", ip("192.168.1.1")).is_err());
        assert!(p.check_ip("x", ip("fd00::1")).is_ok());
        assert!(p.check_ip("x", ip("fd00::2")).is_err());
        assert!(p.check_ip("internal.example", ip("192.168.1.1")).is_ok());
        assert!(p.check_url("https://10.1.2.3/x").is_ok());
        assert!(p.check_url("https://192.168.1.1/x").is_err());

        let p = policy(true, &[]);
        assert!(p.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(p.check_url("http://localhost:9/x").is_ok());
        assert!(p.check_url("http://hook.localhost:9/x").is_ok());
        assert!(p.check_url("http://[::1]:9/x").is_ok());
        assert!(p.check_url("http://example.com/x").is_err());
        assert!(p.check_url("https://10.0.0.1/x").is_err());
        for ok in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert!(p.check_ip("x", ip(ok)).is_ok(), "{ok}");
        }
        // The switch is for loopback, not for loopback carried in another form.
        for refused in [
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::ffff:0:7f00:1",
        ] {
            assert!(p.check_ip("x", ip(refused)).is_err(), "{refused}");
        }
    }

    #[tokio::test]
    async fn loopback_names_resolve_to_loopback_without_dns() {
        let refused = policy(false, &[])
            .resolve("Hook.Localhost.", 443)
            .await
            .expect("resolves");
        assert!(refused.allowed.is_empty());
        let ips: Vec<IpAddr> = refused.refused.iter().map(|(a, _)| *a).collect();
        assert_eq!(ips, LOOPBACK_ANSWERS.to_vec());
        let message = refused
            .refusal("hook.localhost")
            .expect("refused")
            .to_string();
        assert_eq!(
            message,
            "destination hook.localhost refused: 127.0.0.1 is loopback (127.0.0.0/8, RFC 1122); \
             ::1 is loopback (::1/128, RFC 4291)"
        );
        let allowed = policy(true, &[])
            .resolve("hook.localhost", 8080)
            .await
            .expect("resolves");
        assert_eq!(allowed.allowed.len(), 2);
        assert!(allowed.allowed.iter().all(|a| a.port() == 8080));
        assert!(allowed.refusal("hook.localhost").is_none());
    }

    #[test]
    fn a_refusal_is_found_through_the_source_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Outer(#[source] Box<dyn std::error::Error + Send + Sync>);
        let p = policy(false, &[]);
        let refused = RefusedDestination {
            host: "x".to_owned(),
            refused: vec![(
                ip("127.0.0.1"),
                p.check_ip("x", ip("127.0.0.1")).expect_err("loopback"),
            )],
        };
        let wrapped = Outer(Box::new(Outer(Box::new(refused))));
        assert!(refusal_in(&wrapped).is_some());
        let other = Outer(Box::new(io::Error::other("refused")));
        assert!(refusal_in(&other).is_none());
    }
}
