//! `allow` / `deny`: client addresses and CIDR ranges, IPv4 and IPv6.

use std::net::IpAddr;

/// One rule: allow or deny the addresses in `net`/`bits`, or `all` (None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    pub net: Option<(IpAddr, u8)>,
}

impl Rule {
    /// Parses `"10.0.0.0/8"`, `"::1"`, `"2001:db8::/32"` or `"all"`.
    pub fn parse(allow: bool, s: &str) -> Result<Rule, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(Rule { allow, net: None });
        }
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{s}\" is not an address, a CIDR range such as \"10.0.0.0/8\", or \"all\""))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("\"{s}\": the prefix length must be 0..={max}"))?,
        };
        if to_bits(net) & !mask(bits, net.is_ipv4()) != 0 {
            return Err(format!("\"{s}\" has bits set past its /{bits} prefix"));
        }
        Ok(Rule {
            allow,
            net: Some((net, bits)),
        })
    }

    fn matches(&self, ip: IpAddr) -> bool {
        match self.net {
            None => true,
            Some((net, bits)) => {
                net.is_ipv4() == ip.is_ipv4() && to_bits(ip) & mask(bits, ip.is_ipv4()) == to_bits(net)
            }
        }
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The top `bits` bits of an address of the family's width.
fn mask(bits: u8, v4: bool) -> u128 {
    let full: u128 = if v4 { u32::MAX as u128 } else { u128::MAX };
    full & !full.checked_shr(bits as u32).unwrap_or(0)
}

/// Whether `ip` may pass `rules`: the first rule that matches decides;
/// none matching allows (as nginx does; end with `deny all` to refuse the rest).
pub fn allowed(rules: &[Rule], ip: IpAddr) -> bool {
    // An IPv4 client on an IPv6 socket is that IPv4 client.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    rules.iter().find(|r| r.matches(ip)).is_none_or(|r| r.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins() {
        let rules = vec![
            Rule::parse(false, "192.168.1.1").unwrap(),
            Rule::parse(true, "192.168.1.0/24").unwrap(),
            Rule::parse(true, "2001:db8::/32").unwrap(),
            Rule::parse(false, "all").unwrap(),
        ];
        assert!(!allowed(&rules, ip("192.168.1.1")));
        assert!(allowed(&rules, ip("192.168.1.2")));
        assert!(!allowed(&rules, ip("192.168.2.1")));
        assert!(allowed(&rules, ip("2001:db8:1::5")));
        assert!(!allowed(&rules, ip("2001:db9::1")));
        assert!(allowed(&rules, ip("::ffff:192.168.1.7")), "v4-mapped is v4");
        assert!(allowed(&[], ip("10.0.0.1")), "no rule: allowed");
        let v4all = vec![
            Rule::parse(true, "0.0.0.0/0").unwrap(),
            Rule::parse(false, "all").unwrap(),
        ];
        assert!(allowed(&v4all, ip("8.8.8.8")));
        assert!(!allowed(&v4all, ip("::2")), "0.0.0.0/0 is IPv4 only");
        assert!(allowed(
            &[
                Rule::parse(true, "::1/128").unwrap(),
                Rule::parse(false, "all").unwrap()
            ],
            ip("::1")
        ));
    }

    #[test]
    fn bad_rules() {
        assert!(Rule::parse(true, "10.0.0.1/8").unwrap_err().contains("bits set"));
        assert!(Rule::parse(true, "10.0.0.0/33").is_err());
        assert!(Rule::parse(true, "example.org").is_err());
        assert!(Rule::parse(true, "::/129").is_err());
    }
}
