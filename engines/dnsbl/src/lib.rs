//! dnsbl: checks a message's client address against DNS block lists (the
//! zones of Spamhaus ZEN, SpamCop, Barracuda and their like) and its
//! sender's and HELO's domains against domain block lists (Spamhaus DBL,
//! SURBL, URIBL), through the host's `dns` capability: the engine never
//! touches the network itself, and the operator grants it
//! (`capabilities = ["dns"]`).
//!
//! A listing is an A record in 127.0.0.0/8 under the zone; the
//! 127.255.255.0/24 answers that lists give to refused queries (a public
//! resolver, over quota) are errors, not listings. Each listing is a
//! `spam` threat named `DNSBL.<zone>` with a rule `<zone>=<answer>`;
//! each lookup that failed is a rule `<zone>:<error>`, and the message is
//! clean unless something is listed (a block list that cannot be asked
//! does not block mail).

use cordon_engine_sdk::{Envelope, IpAddress};

/// Zones of one kind, from one setting: comma- or space-separated names,
/// checked and lower-cased.
pub fn zones(settings: &cordon_engine_sdk::Settings, key: &str) -> Result<Vec<String>, String> {
    let Some(text) = settings.get(key) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for z in text.split([',', ' ']).filter(|z| !z.is_empty()) {
        let z = z.trim_end_matches('.').to_ascii_lowercase();
        let valid = z.len() <= 200
            && z.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(format!("setting {key}: {z:?} is not a zone name"));
        }
        out.push(z);
    }
    Ok(out)
}

/// The name under a zone that lists `ip`: IPv4 octets reversed, IPv6
/// nibbles reversed (RFC 5782).
pub fn reversed(ip: &IpAddress) -> String {
    match *ip {
        IpAddress::Ipv4((a, b, c, d)) => format!("{d}.{c}.{b}.{a}"),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            let mut nibbles = Vec::with_capacity(32);
            for group in [a, b, c, d, e, f, g, h] {
                for shift in [12, 8, 4, 0] {
                    nibbles.push(format!("{:x}", (group >> shift) & 0xf));
                }
            }
            nibbles.reverse();
            nibbles.join(".")
        }
    }
}

/// The domain of an address or a host name, lower case; none when it has
/// no dot (a bare host name, an address literal).
pub fn domain_of(name: &str) -> Option<String> {
    let d = name.rsplit_once('@').map_or(name, |(_, d)| d);
    let d = d.trim_end_matches('.').to_ascii_lowercase();
    (d.contains('.') && !d.starts_with('[') && d.len() <= 200).then_some(d)
}

/// The queries for one message: (zone, name) pairs, the client address
/// under each address zone, then each distinct domain under each domain
/// zone.
pub fn queries(
    envelope: &Envelope,
    ip_zones: &[String],
    domain_zones: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(ip) = &envelope.client_address {
        let r = reversed(ip);
        for z in ip_zones {
            out.push((z.clone(), format!("{r}.{z}")));
        }
    }
    let mut domains: Vec<String> = [envelope.mail_from.as_str(), envelope.helo.as_str()]
        .into_iter()
        .filter_map(domain_of)
        .collect();
    domains.dedup();
    for d in &domains {
        for z in domain_zones {
            out.push((z.clone(), format!("{d}.{z}")));
        }
    }
    out
}

#[cfg(target_arch = "wasm32")]
mod component {
    use cordon_engine_sdk::capabilities::dns::{self, DnsError, DnsRecord, Query, RecordType};
    use cordon_engine_sdk::{
        Engine, Envelope, Settings, Threat, ThreatKind, Verdict, export_engine,
    };

    use super::*;

    fn error_name(e: DnsError) -> &'static str {
        match e {
            DnsError::Nxdomain => "nxdomain",
            DnsError::NoData => "no-data",
            DnsError::Timeout => "timeout",
            DnsError::ServerFailure => "server-failure",
            DnsError::BudgetExhausted => "budget-exhausted",
            DnsError::InvalidName => "invalid-name",
        }
    }

    struct Dnsbl {
        ip_zones: Vec<String>,
        domain_zones: Vec<String>,
    }

    impl Engine for Dnsbl {
        const NAME: &'static str = "dnsbl";
        const VENDOR: &'static str = "cordon";
        const VERSION: &'static str = env!("CARGO_PKG_VERSION");

        fn init(settings: &Settings) -> Result<Self, String> {
            for key in settings.keys() {
                if key != "zones" && key != "domain_zones" {
                    return Err(format!(
                        "unknown setting {key:?}: dnsbl takes zones and domain_zones"
                    ));
                }
            }
            let ip_zones = zones(settings, "zones")?;
            let domain_zones = zones(settings, "domain_zones")?;
            if ip_zones.is_empty() && domain_zones.is_empty() {
                return Err("no zones: set zones (address lists) or domain_zones".into());
            }
            Ok(Self {
                ip_zones,
                domain_zones,
            })
        }

        fn definitions_version(&self) -> String {
            let mut all = self.ip_zones.clone();
            all.extend(self.domain_zones.iter().cloned());
            all.join(",")
        }

        fn scan(&self, envelope: &Envelope, _message: &[u8]) -> Verdict {
            let asked = queries(envelope, &self.ip_zones, &self.domain_zones);
            if asked.is_empty() {
                return Verdict::clean();
            }
            let list: Vec<Query> = asked
                .iter()
                .map(|(_, name)| Query {
                    name: name.clone(),
                    record_type: RecordType::A,
                })
                .collect();
            let answers = dns::lookup_all(&list);
            let mut threats: Vec<Threat> = Vec::new();
            let mut rules = Vec::new();
            for ((zone, _), answer) in asked.iter().zip(answers) {
                match answer {
                    Ok(a) => {
                        for r in a.records {
                            let DnsRecord::A((127, x, y, z)) = r else {
                                continue;
                            };
                            if (x, y) == (255, 255) {
                                rules.push(format!("{zone}:refused-127.255.255.{z}"));
                                continue;
                            }
                            rules.push(format!("{zone}=127.{x}.{y}.{z}"));
                            let name = format!("DNSBL.{zone}");
                            if !threats.iter().any(|t| t.name == name) {
                                threats.push(Threat::new(name, ThreatKind::Spam));
                            }
                        }
                    }
                    Err(DnsError::Nxdomain) => {}
                    Err(e) => rules.push(format!("{zone}:{}", error_name(e))),
                }
            }
            Verdict {
                rules,
                ..Verdict::detected(threats)
            }
        }
    }

    export_engine!(Dnsbl);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(ip: Option<IpAddress>, from: &str, helo: &str) -> Envelope {
        Envelope {
            client_address: ip,
            client_name: String::new(),
            helo: helo.into(),
            mail_from: from.into(),
            recipients: Vec::new(),
            authenticated_user: None,
            queue_id: None,
        }
    }

    #[test]
    fn addresses_are_reversed_as_rfc_5782_says() {
        assert_eq!(reversed(&IpAddress::Ipv4((192, 0, 2, 99))), "99.2.0.192");
        // RFC 5782 section 2.4: 2001:db8:1:2:3:4:567:89ab.
        assert_eq!(
            reversed(&IpAddress::Ipv6((0x2001, 0xdb8, 1, 2, 3, 4, 0x567, 0x89ab))),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    #[test]
    fn each_target_is_asked_of_each_zone_of_its_kind() {
        let ip = [String::from("bl.test"), String::from("bl2.test")];
        let dom = [String::from("dbl.test")];
        let q = queries(
            &envelope(
                Some(IpAddress::Ipv4((127, 0, 0, 2))),
                "a@Example.COM",
                "example.com",
            ),
            &ip,
            &dom,
        );
        assert_eq!(
            q,
            vec![
                ("bl.test".into(), "2.0.0.127.bl.test".into()),
                ("bl2.test".into(), "2.0.0.127.bl2.test".into()),
                ("dbl.test".into(), "example.com.dbl.test".into()),
            ]
        );
        // No client address, a null sender, a bare HELO: nothing to ask.
        assert!(queries(&envelope(None, "", "localhost"), &ip, &dom).is_empty());
    }

    #[test]
    fn zone_settings_are_checked() {
        let mut s = cordon_engine_sdk::Settings::new();
        s.insert("zones".into(), "zen.example, bl.test.".into());
        assert_eq!(zones(&s, "zones").unwrap(), vec!["zen.example", "bl.test"]);
        s.insert("zones".into(), "bad zone!".into());
        assert!(zones(&s, "zones").is_err());
    }
}
