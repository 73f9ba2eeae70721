//! Which addresses gust may connect to on a user's behalf (async callbacks): never
//! loopback, private, link-local (cloud metadata lives at 169.254.169.254), multicast or
//! reserved ones unless `gust up --outbound-allow` names them — a function's caller must
//! not be able to make gust reach what only gust can reach (SSRF).
//!
//! A host name is resolved once, every address is checked, and gust connects to a checked
//! address itself, so a name cannot resolve to a public address for the check and to a
//! private one for the connection (DNS rebinding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address range: a base address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    base: IpAddr,
    prefix: u8,
}

impl Range {
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self { base: IpAddr::V4(Ipv4Addr::new(a, b, c, d)), prefix }
    }

    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let [a, b, c, d, e, f, g, h] = segments;
        Self { base: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), prefix }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, ip) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(base) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(base) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// `10.0.0.0/8`, `::1`, `192.168.1.7` (a single address).
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let base: IpAddr = addr.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { base, prefix })
    }
}

const LOOPBACK: [Range; 2] = [Range::v4(127, 0, 0, 0, 8), Range::v6([0, 0, 0, 0, 0, 0, 0, 1], 128)];
const PRIVATE: [Range; 5] = [
    Range::v4(10, 0, 0, 0, 8),
    Range::v4(172, 16, 0, 0, 12),
    Range::v4(192, 168, 0, 0, 16),
    Range::v4(100, 64, 0, 0, 10),
    Range::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
];
const LINK_LOCAL: [Range; 2] = [Range::v4(169, 254, 0, 0, 16), Range::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10)];
/// Never a sensible callback target, whatever is allowed.
const OTHER: [Range; 7] = [
    Range::v4(0, 0, 0, 0, 8),
    Range::v4(192, 0, 0, 0, 24),
    Range::v4(198, 18, 0, 0, 15),
    Range::v4(224, 0, 0, 0, 4),
    Range::v4(240, 0, 0, 0, 4),
    Range::v6([0, 0, 0, 0, 0, 0, 0, 0], 128),
    Range::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// The addresses outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Vec<Range>,
}

impl OutboundPolicy {
    /// Parses `--outbound-allow`: a comma-separated list of CIDR ranges, addresses and
    /// the words `loopback`, `private` and `link-local`.
    ///
    /// # Errors
    /// A message naming the item that is none of these.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut allowed = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item {
                "loopback" => allowed.extend(LOOPBACK),
                "private" => allowed.extend(PRIVATE),
                "link-local" => allowed.extend(LINK_LOCAL),
                _ => allowed.push(Range::parse(item).ok_or_else(|| {
                    format!("`{item}` is not an address, a CIDR range (10.0.0.0/8), loopback, private or link-local")
                })?),
            }
        }
        Ok(Self { allowed })
    }

    /// `Ok` when gust may connect to `ip`; else what kind of address it is.
    ///
    /// # Errors
    /// `"loopback"`, `"private"`, `"link-local"` or `"reserved"`.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        // An IPv4 address written as IPv6 (::ffff:127.0.0.1) is judged as itself.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let kind = if LOOPBACK.iter().any(|r| r.contains(ip)) {
            "loopback"
        } else if PRIVATE.iter().any(|r| r.contains(ip)) {
            "private"
        } else if LINK_LOCAL.iter().any(|r| r.contains(ip)) {
            "link-local"
        } else if OTHER.iter().any(|r| r.contains(ip)) {
            "reserved"
        } else {
            return Ok(());
        };
        if kind != "reserved" && self.allowed.iter().any(|r| r.contains(ip)) {
            return Ok(());
        }
        Err(kind)
    }

    /// Resolves `host` and keeps the addresses gust may connect to.
    ///
    /// # Errors
    /// A message for a name that does not resolve, or whose every address is refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::SocketAddr>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<std::net::SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![(ip, port).into()],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("{host} does not resolve: {e}"))?
                .collect(),
        };
        let mut refused = None;
        let ok: Vec<_> = addrs
            .into_iter()
            .filter(|a| match self.check(a.ip()) {
                Ok(()) => true,
                Err(kind) => {
                    refused = Some((a.ip(), kind));
                    false
                }
            })
            .collect();
        match (ok.is_empty(), refused) {
            (false, _) => Ok(ok),
            (true, Some((ip, kind))) => Err(format!(
                "{host} is {ip}, a {kind} address; gust does not call loopback, private or link-local \
                 addresses for users unless `gust up --outbound-allow` names them"
            )),
            (true, None) => Err(format!("{host} has no address")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn special_addresses_are_refused_by_default() {
        let p = OutboundPolicy::default();
        for (a, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.9.9.9", "loopback"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.0.10", "private"),
            ("100.64.0.1", "private"),
            ("fd00::1", "private"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("0.0.0.0", "reserved"),
            ("224.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("::", "reserved"),
        ] {
            assert_eq!(p.check(ip(a)), Err(kind), "{a}");
        }
        for a in ["93.184.216.34", "172.32.0.1", "8.8.8.8", "2606:4700::1111", "192.169.0.1"] {
            assert_eq!(p.check(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn allowed_ranges_open_only_themselves() {
        let p = OutboundPolicy::parse("loopback, 10.0.0.0/16, 192.168.1.7").expect("policy");
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("::1")), Ok(()));
        assert_eq!(p.check(ip("10.0.200.1")), Ok(()));
        assert_eq!(p.check(ip("10.1.0.1")), Err("private"));
        assert_eq!(p.check(ip("192.168.1.7")), Ok(()));
        assert_eq!(p.check(ip("192.168.1.8")), Err("private"));
        assert_eq!(p.check(ip("169.254.169.254")), Err("link-local"));
        assert!(OutboundPolicy::parse("10.0.0.0/33").is_err());
        assert!(OutboundPolicy::parse("intranet").unwrap_err().contains("intranet"));
        // Reserved addresses stay refused even inside an allowed range.
        assert_eq!(OutboundPolicy::parse("0.0.0.0/0").expect("policy").check(ip("0.0.0.0")), Err("reserved"));
    }
}
