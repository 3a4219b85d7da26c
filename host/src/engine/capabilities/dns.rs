//! The `dns` capability: lookups an engine asks the host to make.
//!
//! One resolver (hickory-resolver) serves every engine of the runtime: the
//! servers configured in `[dns] servers`, else those of `/etc/resolv.conf`.
//! Its cache keeps answers, and NXDOMAIN and no-data answers, for their
//! TTLs (negative ones from the zone's SOA), so the queries a burst of mail
//! repeats (a sender's SPF record, a DNSBL listing) go out once.
//!
//! Each call is bounded: a name is looked up as given, absolute (no search
//! domains, no hosts file); a scan makes at most
//! [`DnsSettings::max_queries_per_scan`] queries (a query the cache answers
//! counts too: the budget bounds what an engine can ask, not what the
//! network sees); each query waits at most [`DnsSettings::query_timeout`],
//! and never past the scan's own deadline. A guest waiting on a query is a
//! suspended fiber on the scan's task: it holds no thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as NetDnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType as HickoryType};
use hickory_resolver::{Resolver, TokioResolver};
use wasmtime::component::Linker;

use crate::bindings::cordon::scanner::dns::{
    Answer, DnsError, DnsRecord, Host, Mx, Query, RecordType,
};
use crate::engine::state::ScanState;
use crate::engine::stats::EngineStats;

/// The DNS settings (`[dns]` in config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The servers to ask; empty: those of `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// How long one query may wait for an answer (within the scan's own
    /// deadline).
    pub query_timeout: Duration,
    /// Queries one scan (or `learn` call) may make.
    pub max_queries_per_scan: u32,
    /// Answers the cache keeps.
    pub cache_entries: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            query_timeout: Duration::from_secs(2),
            max_queries_per_scan: 50,
            cache_entries: 10_000,
        }
    }
}

/// Names longer than this (in ASCII, with the dots) are refused.
const MAX_NAME_BYTES: usize = 253;

/// Why the resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up DNS: {0}")]
pub struct DnsSetupError(String);

/// The runtime's resolver.
pub struct Dns {
    resolver: TokioResolver,
    settings: DnsSettings,
}

impl Dns {
    /// A resolver with `settings`: its servers, or the system's when none
    /// are given (an error names what is wrong with `/etc/resolv.conf`).
    pub fn new(settings: DnsSettings) -> Result<Self, DnsSetupError> {
        let provider = TokioRuntimeProvider::default();
        let mut builder = if settings.servers.is_empty() {
            Resolver::builder(provider).map_err(|e| {
                DnsSetupError(format!(
                    "no [dns] servers are configured, and the system's (/etc/resolv.conf) cannot be read: {e}"
                ))
            })?
        } else {
            let servers = settings
                .servers
                .iter()
                .map(|addr| {
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut server.connections {
                        c.port = addr.port();
                    }
                    server
                })
                .collect();
            let mut b =
                Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), provider);
            *b.options_mut() = ResolverOpts::default();
            b
        };
        let opts = builder.options_mut();
        opts.timeout = settings.query_timeout;
        opts.attempts = 1;
        opts.cache_size = settings.cache_entries;
        opts.use_hosts_file = ResolveHosts::Never;
        // Names are absolute (see `absolute`): never tried with the search
        // domains of resolv.conf.
        opts.ndots = 0;
        // What a DNS block list answers is 127.0.0.x: nothing is filtered.
        opts.deny_answers.clear();
        let resolver = builder
            .build()
            .map_err(|e| DnsSetupError(format!("cannot build the resolver: {e}")))?;
        Ok(Self { resolver, settings })
    }

    /// The settings in force.
    pub fn settings(&self) -> &DnsSettings {
        &self.settings
    }

    /// Looks up `name` for `record_type`, waiting at most the query
    /// timeout and never past `deadline`.
    pub async fn lookup(
        &self,
        name: &str,
        record_type: RecordType,
        deadline: Instant,
    ) -> Result<Answer, DnsError> {
        let name = absolute(name)?;
        let wait = self
            .settings
            .query_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let kind = hickory_type(record_type);
        match tokio::time::timeout(wait, self.resolver.lookup(name, kind)).await {
            Err(_) => Err(DnsError::Timeout),
            Ok(Err(e)) => Err(error_of(&e)),
            Ok(Ok(lookup)) => {
                let mut ttl = u32::MAX;
                let mut records = Vec::new();
                for r in lookup.answers() {
                    if let Some(record) = record_of(&r.data, record_type) {
                        ttl = ttl.min(r.ttl);
                        records.push(record);
                    }
                }
                if records.is_empty() {
                    return Err(DnsError::NoData);
                }
                Ok(Answer { records, ttl })
            }
        }
    }
}

/// `name` as an absolute domain name, or `invalid-name`: ASCII (an
/// internationalised name is given in its `xn--` form), at most 253 bytes,
/// labels of 1 to 63 bytes.
fn absolute(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty()
        || trimmed.len() > MAX_NAME_BYTES
        || !trimmed.is_ascii()
        || trimmed.split('.').any(|l| l.is_empty() || l.len() > 63)
    {
        return Err(DnsError::InvalidName);
    }
    let mut n = Name::from_ascii(trimmed).map_err(|_| DnsError::InvalidName)?;
    n.set_fqdn(true);
    Ok(n)
}

fn hickory_type(t: RecordType) -> HickoryType {
    match t {
        RecordType::A => HickoryType::A,
        RecordType::Aaaa => HickoryType::AAAA,
        RecordType::Mx => HickoryType::MX,
        RecordType::Txt => HickoryType::TXT,
        RecordType::Ptr => HickoryType::PTR,
        RecordType::Cname => HickoryType::CNAME,
        RecordType::Ns => HickoryType::NS,
    }
}

/// A name as the contract gives it: without the trailing dot.
fn name_text(n: &Name) -> String {
    let s = n.to_ascii();
    s.strip_suffix('.').map(str::to_string).unwrap_or(s)
}

/// The record `data` holds, when it is of the type asked for (the CNAMEs
/// a resolver followed to get there are left out).
fn record_of(data: &RData, asked: RecordType) -> Option<DnsRecord> {
    Some(match (data, asked) {
        (RData::A(a), RecordType::A) => {
            let [x, y, z, w] = a.0.octets();
            DnsRecord::A((x, y, z, w))
        }
        (RData::AAAA(a), RecordType::Aaaa) => {
            let s = a.0.segments();
            DnsRecord::Aaaa((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
        (RData::MX(mx), RecordType::Mx) => DnsRecord::Mx(Mx {
            preference: mx.preference,
            exchange: name_text(&mx.exchange),
        }),
        (RData::TXT(txt), RecordType::Txt) => {
            DnsRecord::Txt(txt.txt_data.iter().map(|s| s.to_vec()).collect())
        }
        (RData::PTR(p), RecordType::Ptr) => DnsRecord::Ptr(name_text(&p.0)),
        (RData::CNAME(c), RecordType::Cname) => DnsRecord::Cname(name_text(&c.0)),
        (RData::NS(ns), RecordType::Ns) => DnsRecord::Ns(name_text(&ns.0)),
        _ => return None,
    })
}

/// The contract's error for a failed lookup.
fn error_of(e: &NetError) -> DnsError {
    match e {
        NetError::Timeout => DnsError::Timeout,
        NetError::Dns(NetDnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => DnsError::Nxdomain,
            _ => DnsError::NoData,
        },
        NetError::Dns(NetDnsError::ResponseCode(ResponseCode::NXDomain)) => DnsError::Nxdomain,
        _ => DnsError::ServerFailure,
    }
}

/// The name of an error as stats and logs give it.
pub fn error_name(e: DnsError) -> &'static str {
    match e {
        DnsError::Nxdomain => "nxdomain",
        DnsError::NoData => "no-data",
        DnsError::Timeout => "timeout",
        DnsError::ServerFailure => "server-failure",
        DnsError::BudgetExhausted => "budget-exhausted",
        DnsError::InvalidName => "invalid-name",
    }
}

/// What one call may still ask of the resolver.
pub struct DnsCall {
    dns: Arc<Dns>,
    remaining: u32,
    stats: Arc<EngineStats>,
}

impl DnsCall {
    /// A call's share of `dns`, counted in `stats`.
    pub fn new(dns: Arc<Dns>, stats: Arc<EngineStats>) -> Self {
        let remaining = dns.settings.max_queries_per_scan;
        Self {
            dns,
            remaining,
            stats,
        }
    }

    /// Takes one query from the budget; false when it is spent.
    fn take(&mut self) -> bool {
        if self.remaining == 0 {
            return false;
        }
        self.remaining -= 1;
        true
    }
}

/// Counts one lookup's result.
fn count(stats: &EngineStats, r: &Result<Answer, DnsError>) {
    stats.record_capability("dns", r.as_ref().map_or_else(|e| error_name(*e), |_| "ok"));
}

impl Host for ScanState {
    async fn lookup(
        &mut self,
        name: String,
        record_type: RecordType,
    ) -> wasmtime::Result<Result<Answer, DnsError>> {
        let deadline = self.deadline;
        let Some(call) = self.dns.as_mut() else {
            return Ok(Err(DnsError::ServerFailure));
        };
        if !call.take() {
            let r = Err(DnsError::BudgetExhausted);
            count(&call.stats, &r);
            return Ok(r);
        }
        let r = call.dns.lookup(&name, record_type, deadline).await;
        count(&call.stats, &r);
        Ok(r)
    }

    async fn lookup_all(
        &mut self,
        queries: Vec<Query>,
    ) -> wasmtime::Result<Vec<Result<Answer, DnsError>>> {
        let deadline = self.deadline;
        let Some(call) = self.dns.as_mut() else {
            return Ok(queries
                .iter()
                .map(|_| Err(DnsError::ServerFailure))
                .collect());
        };
        // Within the budget, in order; the rest are refused unasked.
        let asked = queries.len().min(call.remaining as usize);
        call.remaining -= asked as u32;
        let dns = call.dns.clone();
        let lookups = queries[..asked]
            .iter()
            .map(|q| dns.lookup(&q.name, q.record_type, deadline));
        let mut results = futures_util::future::join_all(lookups).await;
        results.resize_with(queries.len(), || Err(DnsError::BudgetExhausted));
        for r in &results {
            count(&call.stats, r);
        }
        Ok(results)
    }
}

/// The `dns` interface for synchronous calls: every lookup fails with
/// `server-failure` (see the module documentation of `capabilities`).
pub(super) fn link_unavailable(linker: &mut Linker<ScanState>) -> wasmtime::Result<()> {
    let mut dns = linker.instance("cordon:scanner/dns@0.2.0")?;
    dns.func_wrap(
        "lookup",
        |_, (_, _): (String, RecordType)| -> wasmtime::Result<(Result<Answer, DnsError>,)> {
            Ok((Err(DnsError::ServerFailure),))
        },
    )?;
    dns.func_wrap(
        "lookup-all",
        |_, (queries,): (Vec<Query>,)| -> wasmtime::Result<(Vec<Result<Answer, DnsError>>,)> {
            Ok((queries
                .iter()
                .map(|_| Err(DnsError::ServerFailure))
                .collect(),))
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_absolute_ascii_and_bounded() {
        assert_eq!(absolute("example.com").unwrap().to_ascii(), "example.com.");
        assert_eq!(absolute("example.com.").unwrap().to_ascii(), "example.com.");
        for bad in [
            "",
            ".",
            "a..b",
            "exämple.com",
            &"a".repeat(64),
            &format!("{}.com", ["abc"; 70].join(".")),
        ] {
            assert!(
                matches!(absolute(bad), Err(DnsError::InvalidName)),
                "{bad:?}"
            );
        }
        assert!(absolute(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn only_records_of_the_type_asked_for_are_given() {
        use hickory_resolver::proto::rr::rdata::{A, CNAME};
        let a = RData::A(A([127, 0, 0, 2].into()));
        assert!(matches!(
            record_of(&a, RecordType::A),
            Some(DnsRecord::A((127, 0, 0, 2)))
        ));
        assert!(record_of(&a, RecordType::Aaaa).is_none());
        let cname = RData::CNAME(CNAME(Name::from_ascii("target.example.").unwrap()));
        assert!(record_of(&cname, RecordType::A).is_none());
        assert!(matches!(
            record_of(&cname, RecordType::Cname),
            Some(DnsRecord::Cname(n)) if n == "target.example"
        ));
    }
}
