//! Whether an IP address is a public unicast destination: the IANA IPv4 and IPv6
//! Special-Purpose Address Registries, multicast and non-unicast space, and every IPv6
//! form that carries an IPv4 address. Pure; the SSRF policy in `net` is built on it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// A special-purpose block: a registry entry, or multicast / non-unicast space.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Special {
    pub(crate) net: IpNet,
    pub(crate) name: &'static str,
    pub(crate) rfc: &'static str,
    /// The registry's "Globally Reachable". A reachable entry re-opens part of a refused
    /// block (192.0.0.9/32 inside 192.0.0.0/24); the most specific entry decides.
    reachable: bool,
}

impl fmt::Display for Special {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.net, self.rfc)
    }
}

const fn v4(
    o: [u8; 4],
    len: u8,
    name: &'static str,
    rfc: &'static str,
    reachable: bool,
) -> Special {
    let [a, b, c, d] = o;
    Special {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)),
        name,
        rfc,
        reachable,
    }
}

const fn v6(
    s: [u16; 8],
    len: u8,
    name: &'static str,
    rfc: &'static str,
    reachable: bool,
) -> Special {
    let [a, b, c, d, e, f, g, h] = s;
    Special {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            len,
        )),
        name,
        rfc,
        reachable,
    }
}

/// The IANA IPv4 Special-Purpose Address Registry (every entry, "Globally Reachable"
/// False or N/A refused, True kept as an exception), plus multicast.
#[rustfmt::skip]
static V4: &[Special] = &[
    v4([0, 0, 0, 0], 8, "\"this network\"", "RFC 791", false),
    v4([0, 0, 0, 0], 32, "\"this host on this network\"", "RFC 1122", false),
    v4([10, 0, 0, 0], 8, "private-use", "RFC 1918", false),
    v4([100, 64, 0, 0], 10, "shared address space", "RFC 6598", false),
    v4([127, 0, 0, 0], 8, "loopback", "RFC 1122", false),
    v4([169, 254, 0, 0], 16, "link-local", "RFC 3927", false),
    v4([172, 16, 0, 0], 12, "private-use", "RFC 1918", false),
    v4([192, 0, 0, 0], 24, "IETF protocol assignments", "RFC 6890", false),
    v4([192, 0, 0, 0], 29, "IPv4 service continuity prefix", "RFC 7335", false),
    v4([192, 0, 0, 8], 32, "IPv4 dummy address", "RFC 7600", false),
    v4([192, 0, 0, 9], 32, "port control protocol anycast", "RFC 7723", true),
    v4([192, 0, 0, 10], 32, "TURN anycast", "RFC 8155", true),
    v4([192, 0, 0, 170], 32, "NAT64/DNS64 discovery", "RFC 8880", false),
    v4([192, 0, 0, 171], 32, "NAT64/DNS64 discovery", "RFC 8880", false),
    v4([192, 0, 2, 0], 24, "documentation (TEST-NET-1)", "RFC 5737", false),
    v4([192, 31, 196, 0], 24, "AS112-v4", "RFC 7535", true),
    v4([192, 52, 193, 0], 24, "AMT", "RFC 7450", true),
    v4([192, 88, 99, 0], 24, "deprecated 6to4 relay anycast", "RFC 7526", false),
    v4([192, 88, 99, 2], 32, "6a44 relay anycast", "RFC 6751", true),
    v4([192, 168, 0, 0], 16, "private-use", "RFC 1918", false),
    v4([192, 175, 48, 0], 24, "direct delegation AS112 service", "RFC 7534", true),
    v4([198, 18, 0, 0], 15, "benchmarking", "RFC 2544", false),
    v4([198, 51, 100, 0], 24, "documentation (TEST-NET-2)", "RFC 5737", false),
    v4([203, 0, 113, 0], 24, "documentation (TEST-NET-3)", "RFC 5737", false),
    v4([224, 0, 0, 0], 4, "multicast", "RFC 5771", false),
    v4([240, 0, 0, 0], 4, "reserved", "RFC 1112", false),
    v4([255, 255, 255, 255], 32, "limited broadcast", "RFC 919", false),
];

const R: &str = "reserved (not global unicast)";

/// Everything outside global unicast 2000::/3 (the IANA IPv6 Address Space registry:
/// reserved blocks, unique-local, link-local, site-local, multicast), the IANA IPv6
/// Special-Purpose Address Registry, and the deprecated IPv4-carrying forms.
#[rustfmt::skip]
static V6: &[Special] = &[
    v6([0, 0, 0, 0, 0, 0, 0, 0], 8, R, "RFC 4291", false),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 8, R, "RFC 4291", false),
    v6([0x200, 0, 0, 0, 0, 0, 0, 0], 7, R, "RFC 4048", false),
    v6([0x400, 0, 0, 0, 0, 0, 0, 0], 6, R, "RFC 4291", false),
    v6([0x800, 0, 0, 0, 0, 0, 0, 0], 5, R, "RFC 4291", false),
    v6([0x1000, 0, 0, 0, 0, 0, 0, 0], 4, R, "RFC 4291", false),
    v6([0x4000, 0, 0, 0, 0, 0, 0, 0], 3, R, "RFC 4291", false),
    v6([0x6000, 0, 0, 0, 0, 0, 0, 0], 3, R, "RFC 4291", false),
    v6([0x8000, 0, 0, 0, 0, 0, 0, 0], 3, R, "RFC 4291", false),
    v6([0xa000, 0, 0, 0, 0, 0, 0, 0], 3, R, "RFC 4291", false),
    v6([0xc000, 0, 0, 0, 0, 0, 0, 0], 3, R, "RFC 4291", false),
    v6([0xe000, 0, 0, 0, 0, 0, 0, 0], 4, R, "RFC 4291", false),
    v6([0xf000, 0, 0, 0, 0, 0, 0, 0], 5, R, "RFC 4291", false),
    v6([0xf800, 0, 0, 0, 0, 0, 0, 0], 6, R, "RFC 4291", false),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local", "RFC 4193", false),
    v6([0xfe00, 0, 0, 0, 0, 0, 0, 0], 9, R, "RFC 4291", false),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local", "RFC 4291", false),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local (deprecated)", "RFC 3879", false),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "RFC 4291", false),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, "unspecified", "RFC 4291", false),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", "RFC 4291", false),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible (deprecated)", "RFC 4291", false),
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, "IPv4-mapped", "RFC 4291", false),
    v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96, "IPv4-translated (SIIT)", "RFC 2765", false),
    v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64 well-known prefix", "RFC 6052", true),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local-use NAT64", "RFC 8215", false),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only", "RFC 6666", false),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol assignments", "RFC 2928", false),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo", "RFC 4380", false),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 1], 128, "port control protocol anycast", "RFC 7723", true),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 2], 128, "TURN anycast", "RFC 8155", true),
    v6([0x2001, 1, 0, 0, 0, 0, 0, 3], 128, "DNS-SD SRP anycast", "RFC 9665", true),
    v6([0x2001, 2, 0, 0, 0, 0, 0, 0], 48, "benchmarking", "RFC 5180", false),
    v6([0x2001, 3, 0, 0, 0, 0, 0, 0], 32, "AMT", "RFC 7450", true),
    v6([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48, "AS112-v6", "RFC 7535", true),
    v6([0x2001, 0x10, 0, 0, 0, 0, 0, 0], 28, "deprecated ORCHID", "RFC 4843", false),
    v6([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28, "ORCHIDv2", "RFC 7343", true),
    v6([0x2001, 0x30, 0, 0, 0, 0, 0, 0], 28, "drone remote ID entity tags", "RFC 9374", true),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation", "RFC 3849", false),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", "RFC 3056", false),
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48, "direct delegation AS112 service", "RFC 7534", true),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation", "RFC 9637", false),
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, "segment routing (SRv6) SIDs", "RFC 9602", false),
];

/// The most specific entry of `table` containing `ip`.
fn lookup(table: &'static [Special], ip: IpAddr) -> Option<&'static Special> {
    table
        .iter()
        .filter(|s| s.net.contains(&ip))
        .max_by_key(|s| s.net.prefix_len())
}

/// An IPv6 address form that carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Embedded {
    /// `::ffff:a.b.c.d`: the socket layer connects to the IPv4 address itself.
    Mapped(Ipv4Addr),
    /// `64:ff9b::a.b.c.d`: a NAT64 translator forwards to the IPv4 address.
    Nat64(Ipv4Addr),
    /// An ISATAP interface id (`…:0:5efe:a.b.c.d`): tunnelled to the IPv4 address.
    Isatap(Ipv4Addr),
    /// `::a.b.c.d`, deprecated.
    Compatible(Ipv4Addr),
    /// `::ffff:0:a.b.c.d`, SIIT.
    Translated(Ipv4Addr),
    /// `2002:aabb:ccdd::/48`.
    SixToFour(Ipv4Addr),
    /// `2001:0:ssss:ssss:…`: the server in clear, the client XOR-obfuscated.
    Teredo { server: Ipv4Addr, client: Ipv4Addr },
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

impl Embedded {
    /// The IPv4 address `ip` carries, and in which form, if it carries one.
    pub(crate) fn of(ip: Ipv6Addr) -> Option<Self> {
        let [a, b, c, d, e, f, g, h] = ip.segments();
        let low = v4_of(g, h);
        match (a, b, c, d, e, f) {
            (0, 0, 0, 0, 0, 0xffff) => Some(Self::Mapped(low)),
            (0, 0, 0, 0, 0xffff, 0) => Some(Self::Translated(low)),
            // :: and ::1 are the unspecified and loopback addresses, not IPv4-compatible.
            (0, 0, 0, 0, 0, 0) if u32::from(low) > 1 => Some(Self::Compatible(low)),
            (0x64, 0xff9b, 0, 0, 0, 0) => Some(Self::Nat64(low)),
            (0x2002, ..) => Some(Self::SixToFour(v4_of(b, c))),
            (0x2001, 0, ..) => Some(Self::Teredo {
                server: v4_of(c, d),
                client: v4_of(!g, !h),
            }),
            // The u/g bits of the interface id may be set (RFC 5214, section 6.1).
            _ if a & 0xe000 == 0x2000 && e & 0xfcff == 0 && f == 0x5efe => Some(Self::Isatap(low)),
            _ => None,
        }
    }

    /// The IPv4 address packets to this form go to, for the forms judged by it (the
    /// others are refused as a whole range; see docs/decisions.md, SSRF policy).
    pub(crate) fn destination(self) -> Option<Ipv4Addr> {
        match self {
            Self::Mapped(v4) | Self::Nat64(v4) | Self::Isatap(v4) => Some(v4),
            _ => None,
        }
    }

    fn form(self) -> &'static str {
        match self {
            Self::Mapped(_) => "IPv4-mapped",
            Self::Nat64(_) => "NAT64",
            Self::Isatap(_) => "ISATAP",
            Self::Compatible(_) => "IPv4-compatible",
            Self::Translated(_) => "IPv4-translated",
            Self::SixToFour(_) => "6to4",
            Self::Teredo { .. } => "Teredo",
        }
    }
}

/// Why an address is not a public unicast destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The block that refused it: the address's own, or its carried IPv4 address's.
    pub(crate) range: &'static Special,
    /// The IPv4 address the address carries, if any.
    pub(crate) embedded: Option<Embedded>,
}

impl Refusal {
    /// The IPv4 address that was judged in place of the IPv6 address, if one was.
    pub(crate) fn judged_v4(&self) -> Option<Ipv4Addr> {
        self.embedded
            .and_then(Embedded::destination)
            .filter(|v4| self.range.net.contains(&IpAddr::V4(*v4)))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.judged_v4(), self.embedded) {
            (Some(v4), Some(e)) => write!(f, "{} form of {v4}, {}", e.form(), self.range),
            (_, Some(Embedded::Teredo { server, client })) => {
                write!(
                    f,
                    "{} carrying server {server}, client {client}",
                    self.range
                )
            }
            (
                _,
                Some(
                    Embedded::Compatible(v4)
                    | Embedded::Translated(v4)
                    | Embedded::SixToFour(v4)
                    | Embedded::Mapped(v4)
                    | Embedded::Nat64(v4)
                    | Embedded::Isatap(v4),
                ),
            ) => write!(f, "{} carrying {v4}", self.range),
            (_, None) => write!(f, "{}", self.range),
        }
    }
}

fn check_v4(ip: Ipv4Addr) -> Result<(), &'static Special> {
    match lookup(V4, IpAddr::V4(ip)) {
        Some(s) if !s.reachable => Err(s),
        _ => Ok(()),
    }
}

/// `Ok` when `ip` is a public unicast destination; otherwise the special range that
/// refuses it. IPv4-mapped and NAT64 addresses are judged by the IPv4 address they
/// carry; an ISATAP address by its own prefix and then by its IPv4 address.
pub(crate) fn check(ip: IpAddr) -> Result<(), Refusal> {
    let v6 = match ip {
        IpAddr::V4(v4) => {
            return check_v4(v4).map_err(|range| Refusal {
                range,
                embedded: None,
            });
        }
        IpAddr::V6(v6) => v6,
    };
    let embedded = Embedded::of(v6);
    let refuse = |range| Refusal { range, embedded };
    if let Some(Embedded::Mapped(v4) | Embedded::Nat64(v4)) = embedded {
        return check_v4(v4).map_err(refuse);
    }
    if let Some(s) = lookup(V6, ip)
        && !s.reachable
    {
        return Err(refuse(s));
    }
    if let Some(Embedded::Isatap(v4)) = embedded {
        return check_v4(v4).map_err(refuse);
    }
    Ok(())
}

/// Whether `ip` is a public unicast destination.
#[cfg(test)]
pub(crate) fn is_public_unicast(ip: IpAddr) -> bool {
    check(ip).is_ok()
}

/// Loopback as the development switch means it: 127.0.0.0/8, ::1 and the IPv4-mapped
/// form of 127.0.0.0/8 (what a dual-stack socket reports), nothing else.
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// The refusing range's CIDR, or `None` for a public destination.
    fn verdict(text: &str) -> Option<String> {
        check(ip(text)).err().map(|r| r.range.net.to_string())
    }

    fn assert_table(cases: &[(&str, Option<&str>)]) {
        let mut wrong = Vec::new();
        for (addr, expected) in cases {
            let got = verdict(addr);
            if got.as_deref() != *expected {
                wrong.push(format!("{addr}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn every_ipv4_registry_entry_and_its_edges() {
        assert_table(&[
            ("0.0.0.0", Some("0.0.0.0/32")),
            ("0.0.0.1", Some("0.0.0.0/8")),
            ("0.255.255.255", Some("0.0.0.0/8")),
            ("1.0.0.0", None),
            ("10.0.0.0", Some("10.0.0.0/8")),
            ("10.255.255.255", Some("10.0.0.0/8")),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.64.0.0", Some("100.64.0.0/10")),
            ("100.127.255.255", Some("100.64.0.0/10")),
            ("100.128.0.0", None),
            ("127.0.0.1", Some("127.0.0.0/8")),
            ("127.255.255.254", Some("127.0.0.0/8")),
            ("169.254.169.254", Some("169.254.0.0/16")),
            ("172.15.255.255", None),
            ("172.16.0.0", Some("172.16.0.0/12")),
            ("172.31.255.255", Some("172.16.0.0/12")),
            ("172.32.0.0", None),
            ("192.0.0.0", Some("192.0.0.0/29")),
            ("192.0.0.7", Some("192.0.0.0/29")),
            ("192.0.0.8", Some("192.0.0.8/32")),
            ("192.0.0.9", None),
            ("192.0.0.10", None),
            ("192.0.0.11", Some("192.0.0.0/24")),
            ("192.0.0.170", Some("192.0.0.170/32")),
            ("192.0.0.171", Some("192.0.0.171/32")),
            ("192.0.0.255", Some("192.0.0.0/24")),
            ("192.0.2.1", Some("192.0.2.0/24")),
            ("192.31.196.1", None),
            ("192.52.193.1", None),
            ("192.88.99.1", Some("192.88.99.0/24")),
            ("192.88.99.2", None),
            ("192.168.1.1", Some("192.168.0.0/16")),
            ("192.175.48.1", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some("198.18.0.0/15")),
            ("198.19.255.255", Some("198.18.0.0/15")),
            ("198.20.0.0", None),
            ("198.51.100.7", Some("198.51.100.0/24")),
            ("203.0.113.7", Some("203.0.113.0/24")),
            ("223.255.255.255", None),
            ("224.0.0.1", Some("224.0.0.0/4")),
            ("239.255.255.255", Some("224.0.0.0/4")),
            ("240.0.0.1", Some("240.0.0.0/4")),
            ("255.255.255.254", Some("240.0.0.0/4")),
            ("255.255.255.255", Some("255.255.255.255/32")),
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
        ]);
    }

    #[test]
    fn every_ipv6_registry_entry_and_non_global_unicast_space() {
        assert_table(&[
            ("::", Some("::/128")),
            ("::1", Some("::1/128")),
            ("::2", Some("::/96")),
            ("::1:0:0:0", Some("::/8")),
            ("64:ff9b::", Some("0.0.0.0/32")),
            ("64:ff9b:1::1", Some("64:ff9b:1::/48")),
            ("64:ff9b:2::1", Some("::/8")),
            ("100::1", Some("100::/64")),
            ("100:0:0:1::1", Some("100::/8")),
            ("200::1", Some("200::/7")),
            ("400::1", Some("400::/6")),
            ("800::1", Some("800::/5")),
            ("1000::1", Some("1000::/4")),
            ("1fff:ffff::1", Some("1000::/4")),
            ("2001::1", Some("2001::/32")),
            ("2001:1::1", None),
            ("2001:1::2", None),
            ("2001:1::3", None),
            ("2001:1::4", Some("2001::/23")),
            ("2001:2::1", Some("2001:2::/48")),
            ("2001:2:1::1", Some("2001::/23")),
            ("2001:3::1", None),
            ("2001:4:112::1", None),
            ("2001:4:113::1", Some("2001::/23")),
            ("2001:10::1", Some("2001:10::/28")),
            ("2001:20::1", None),
            ("2001:30::1", None),
            ("2001:1ff::1", Some("2001::/23")),
            ("2001:200::1", None),
            ("2001:db8::1", Some("2001:db8::/32")),
            ("2002::1", Some("2002::/16")),
            ("2620:4f:8000::1", None),
            ("3fff::1", Some("3fff::/20")),
            ("3fff:1000::1", None),
            ("4000::1", Some("4000::/3")),
            ("5f00::1", Some("5f00::/16")),
            ("6000::1", Some("6000::/3")),
            ("8000::1", Some("8000::/3")),
            ("a000::1", Some("a000::/3")),
            ("c000::1", Some("c000::/3")),
            ("e000::1", Some("e000::/4")),
            ("f000::1", Some("f000::/5")),
            ("f800::1", Some("f800::/6")),
            ("fc00::1", Some("fc00::/7")),
            ("fdff:ffff::1", Some("fc00::/7")),
            ("fe00::1", Some("fe00::/9")),
            ("fe80::1", Some("fe80::/10")),
            ("febf::1", Some("fe80::/10")),
            ("fec0::1", Some("fec0::/10")),
            ("ff02::1", Some("ff00::/8")),
            ("ff0e::1", Some("ff00::/8")),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2a00:1450:4001::1", None),
        ]);
    }

    /// Every form, with a private and a public IPv4 address inside.
    #[test]
    fn every_ipv4_carrying_form_with_a_private_and_a_public_address() {
        assert_table(&[
            // IPv4-mapped: judged by the IPv4 address.
            ("::ffff:127.0.0.1", Some("127.0.0.0/8")),
            ("::ffff:10.0.0.1", Some("10.0.0.0/8")),
            ("::ffff:100.64.0.1", Some("100.64.0.0/10")),
            ("::ffff:8.8.8.8", None),
            // NAT64 well-known prefix: judged by the IPv4 address.
            ("64:ff9b::a9fe:a9fe", Some("169.254.0.0/16")),
            ("64:ff9b::127.0.0.1", Some("127.0.0.0/8")),
            ("64:ff9b::8.8.8.8", None),
            // ISATAP interface ids in global unicast space: prefix, then IPv4 address.
            ("2a00:1450:1:2:0:5efe:a00:1", Some("10.0.0.0/8")),
            ("2a00:1450:1:2:200:5efe:c0a8:101", Some("192.168.0.0/16")),
            ("2a00:1450:1:2:200:5efe:808:808", None),
            ("2001:db8:1:2:200:5efe:808:808", Some("2001:db8::/32")),
            // Refused whatever they carry.
            ("::127.0.0.1", Some("::/96")),
            ("::8.8.8.8", Some("::/96")),
            ("::ffff:0:7f00:1", Some("::ffff:0:0:0/96")),
            ("::ffff:0:808:808", Some("::ffff:0:0:0/96")),
            ("64:ff9b:1::a9fe:a9fe", Some("64:ff9b:1::/48")),
            ("64:ff9b:1::808:808", Some("64:ff9b:1::/48")),
            ("2002:a9fe:a9fe::", Some("2002::/16")),
            ("2002:808:808::1", Some("2002::/16")),
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", Some("2001::/32")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("2001::/32")),
        ]);
    }

    #[test]
    fn ipv4_carrying_forms_are_unwrapped() {
        let of = |text: &str| match ip(text) {
            IpAddr::V6(v6) => Embedded::of(v6),
            IpAddr::V4(_) => None,
        };
        let a = |text: &str| text.parse::<Ipv4Addr>().expect("v4");
        assert_eq!(
            of("::ffff:127.0.0.1"),
            Some(Embedded::Mapped(a("127.0.0.1")))
        );
        assert_eq!(
            of("::127.0.0.1"),
            Some(Embedded::Compatible(a("127.0.0.1")))
        );
        assert_eq!(
            of("::ffff:0:7f00:1"),
            Some(Embedded::Translated(a("127.0.0.1")))
        );
        assert_eq!(
            of("64:ff9b::a9fe:a9fe"),
            Some(Embedded::Nat64(a("169.254.169.254")))
        );
        assert_eq!(
            of("2002:a9fe:a9fe::"),
            Some(Embedded::SixToFour(a("169.254.169.254")))
        );
        // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (obfuscated).
        assert_eq!(
            of("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            Some(Embedded::Teredo {
                server: a("65.54.227.120"),
                client: a("192.0.2.45")
            })
        );
        assert_eq!(
            of("fe80::5efe:a00:1"),
            None,
            "ISATAP only in global unicast"
        );
        assert_eq!(
            of("2a00:1450::200:5efe:a00:1"),
            Some(Embedded::Isatap(a("10.0.0.1")))
        );
        assert_eq!(of("::"), None);
        assert_eq!(of("::1"), None);
        assert_eq!(of("2a00:1450:4001::1"), None);
    }

    #[test]
    fn the_issue_examples_are_refused_and_named() {
        let message = |text: &str| check(ip(text)).err().map(|r| r.to_string());
        assert_eq!(
            message("::127.0.0.1").as_deref(),
            Some("IPv4-compatible (deprecated) (::/96, RFC 4291) carrying 127.0.0.1")
        );
        assert_eq!(
            message("64:ff9b::a9fe:a9fe").as_deref(),
            Some("NAT64 form of 169.254.169.254, link-local (169.254.0.0/16, RFC 3927)")
        );
        assert_eq!(
            message("2002:a9fe:a9fe::").as_deref(),
            Some("6to4 (2002::/16, RFC 3056) carrying 169.254.169.254")
        );
        assert_eq!(
            message("::ffff:0:7f00:1").as_deref(),
            Some("IPv4-translated (SIIT) (::ffff:0:0:0/96, RFC 2765) carrying 127.0.0.1")
        );
        assert_eq!(
            message("2001:0:4136:e378:8000:63bf:f5ff:fffe").as_deref(),
            Some("Teredo (2001::/32, RFC 4380) carrying server 65.54.227.120, client 10.0.0.1")
        );
        assert_eq!(
            message("100.64.0.1").as_deref(),
            Some("shared address space (100.64.0.0/10, RFC 6598)")
        );
        assert_eq!(
            message("::ffff:127.0.0.1").as_deref(),
            Some("IPv4-mapped form of 127.0.0.1, loopback (127.0.0.0/8, RFC 1122)")
        );
        assert_eq!(
            message("2001:db8:1:2:200:5efe:808:808").as_deref(),
            Some("documentation (2001:db8::/32, RFC 3849) carrying 8.8.8.8")
        );
    }

    #[test]
    fn outside_2000_slash_3_only_the_nat64_prefix_and_mapped_addresses_can_pass() {
        // One address in every /8 outside 2000::/3 (and a few more below ff00::/8):
        // none is public, except through the forms judged by their IPv4 address.
        for first in (0u16..=0xff)
            .map(|b| b << 8)
            .filter(|s| s & 0xe000 != 0x2000)
        {
            for tail in [1u16, 0xffff] {
                let addr = IpAddr::V6(Ipv6Addr::new(first, 0x1234, 0, 0, 0, 0, 0, tail));
                assert!(!is_public_unicast(addr), "{addr}");
            }
        }
        assert!(is_public_unicast(ip("64:ff9b::8.8.8.8")));
        assert!(is_public_unicast(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn the_tables_have_no_duplicates_and_name_every_range() {
        for table in [V4, V6] {
            for (i, s) in table.iter().enumerate() {
                assert_eq!(s.net, s.net.trunc(), "{} has host bits", s.net);
                assert!(!s.name.is_empty() && s.rfc.starts_with("RFC "));
                assert!(
                    table.iter().skip(i + 1).all(|t| t.net != s.net),
                    "{} listed twice",
                    s.net
                );
            }
        }
    }

    #[test]
    fn loopback_is_only_127_slash_8_and_colon_colon_1() {
        for yes in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(ip(yes)), "{yes}");
        }
        for no in [
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::ffff:0:7f00:1",
            "10.0.0.1",
        ] {
            assert!(!is_loopback(ip(no)), "{no}");
        }
    }
}
