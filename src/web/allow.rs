//! The peer allowlist of the built-in status endpoint: exact addresses and
//! CIDR prefixes, IPv4 and IPv6, parsed with `ipnet`. Pure policy.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

/// The peers the built-in status endpoint answers.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 client) are matched as the IPv4 address they carry,
/// in the list and in the peer alike. `::/0` covers IPv6 peers only: to
/// allow every peer, list both `0.0.0.0/0` and `::/0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Allowlist {
    nets: Vec<IpNet>,
}

/// Why an allowlist entry was refused.
pub(crate) type EntryError = &'static str;

impl Allowlist {
    /// Loopback only: `127.0.0.1` and `::1` (not the rest of 127.0.0.0/8).
    pub(crate) fn loopback() -> Allowlist {
        Allowlist {
            nets: vec![
                IpNet::from(IpAddr::from([127, 0, 0, 1])),
                IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ],
        }
    }

    /// A list of the given entries (each parsed with [`parse`]).
    pub(crate) fn of(entries: &[String]) -> Result<Allowlist, (String, EntryError)> {
        let nets = entries
            .iter()
            .map(|e| parse(e).map_err(|why| (e.clone(), why)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist { nets })
    }

    /// Whether `peer` is on the list.
    pub(crate) fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.nets.iter().any(|net| net.contains(&peer))
    }
}

/// One entry: an address (`10.1.2.3`, `fd00::1`) or a CIDR prefix
/// (`10.0.0.0/8`, `fd00::/8`) whose host bits are zero.
pub(crate) fn parse(entry: &str) -> Result<IpNet, EntryError> {
    let net = if entry.contains('/') {
        let net: IpNet = entry
            .parse()
            .map_err(|_| "not a CIDR prefix like 10.0.0.0/8 or fd00::/8")?;
        if net.trunc() != net {
            return Err("host bits are set after the prefix (did you mean its network address?)");
        }
        net
    } else {
        let addr: IpAddr = entry
            .parse()
            .map_err(|_| "not an IP address like 10.1.2.3 or fd00::1")?;
        IpNet::from(addr)
    };
    Ok(canonical(net))
}

/// A prefix inside `::ffff:0:0/96` as the IPv4 prefix it maps.
fn canonical(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.network().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(v4) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(v4);
            }
        }
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> Allowlist {
        Allowlist::of(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn peers_match_addresses_and_prefixes() {
        // (allowlist, peer, admitted)
        let table: &[(&[&str], &str, bool)] = &[
            (&["127.0.0.1"], "127.0.0.1", true),
            (&["127.0.0.1"], "127.0.0.2", false),
            (&["10.0.0.0/8"], "10.255.1.2", true),
            (&["10.0.0.0/8"], "11.0.0.0", false),
            (&["10.0.0.0/8"], "9.255.255.255", false),
            (&["192.168.1.0/24"], "192.168.1.255", true),
            (&["192.168.1.0/24"], "192.168.2.0", false),
            // Edge prefixes: /32 is one address, /0 every IPv4 address.
            (&["10.1.2.3/32"], "10.1.2.3", true),
            (&["10.1.2.3/32"], "10.1.2.4", false),
            (&["0.0.0.0/0"], "203.0.113.9", true),
            (&["0.0.0.0/0"], "::1", false),
            // IPv6.
            (&["::1"], "::1", true),
            (&["::1"], "::2", false),
            (&["fd00::/8"], "fd12:3456::1", true),
            (&["fd00::/8"], "fe80::1", false),
            (&["2001:db8::1/128"], "2001:db8::1", true),
            (&["2001:db8::1/128"], "2001:db8::2", false),
            (&["::/0"], "2001:db8::2", true),
            (&["::/0"], "10.0.0.1", false),
            // v4-mapped v6 peers match as IPv4 ...
            (&["127.0.0.1"], "::ffff:127.0.0.1", true),
            (&["10.0.0.0/8"], "::ffff:10.9.8.7", true),
            (&["10.0.0.0/8"], "::ffff:11.0.0.1", false),
            // ... and so do v4-mapped entries.
            (&["::ffff:127.0.0.1"], "127.0.0.1", true),
            (&["::ffff:10.0.0.0/104"], "10.3.2.1", true),
            (&["::ffff:10.0.0.0/104"], "11.3.2.1", false),
            (&["::ffff:0:0/96"], "198.51.100.1", true),
            // Several entries: any one.
            (&["10.0.0.0/8", "::1"], "::1", true),
            (&["10.0.0.0/8", "::1"], "127.0.0.1", false),
        ];
        for &(entries, peer, want) in table {
            let peer: IpAddr = peer.parse().unwrap();
            assert_eq!(list(entries).contains(peer), want, "{entries:?} {peer}");
        }
    }

    #[test]
    fn the_default_is_loopback_only() {
        let l = Allowlist::loopback();
        for (peer, want) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("127.0.0.2", false),
            ("10.0.0.1", false),
            ("::2", false),
        ] {
            assert_eq!(l.contains(peer.parse().unwrap()), want, "{peer}");
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        for entry in [
            "",
            "localhost",
            "10.0.0",
            "10.0.0.256",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "fd00::1/8",
            "10.0.0.0/",
            "/8",
            " 10.0.0.1",
            "fe80::1%eth0",
            "10.0.0.0/8,::1",
        ] {
            assert!(parse(entry).is_err(), "{entry:?} was accepted");
        }
    }
}
