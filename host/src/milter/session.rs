//! One milter connection: the MTA's callbacks collect the envelope, headers
//! and body; end-of-message runs [`crate::judge::judge`] and answers with the
//! decision as milter actions.
//!
//! The session works on any stream (`AsyncRead + AsyncWrite`), so tests
//! drive it over an in-memory duplex and Postfix drives it over a socket.
//! Nothing the MTA sends can panic it: malformed packets end the session
//! with an error, and the MTA applies its `milter_default_action`.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use miltr_common::actions::{Action as MilterAction, Continue, Discard, Replycode};
use miltr_common::commands::{Body, Connect, Header, Helo, Macro, Mail, Recipient, Unknown};
use miltr_common::encoding::Writable;
use miltr_common::modifications::ModificationResponse;
use miltr_common::modifications::headers::{AddHeader, ChangeHeader};
use miltr_common::modifications::quarantine::Quarantine;
use miltr_common::modifications::recipients::{AddRecipient, DeleteRecipient};
use miltr_common::optneg::{OptNeg, Protocol};
use miltr_server::Milter;
use tokio::sync::watch;

use crate::bindings::{Envelope, IpAddress, Recipient as EnvRecipient};
use crate::judge::{Case, Judged, judge};
use crate::live::{LiveSettings, SessionLimits};
use crate::policy::bare_address;
use crate::policy::{Action, Decision, RecipientEdit};
use crate::registry::Registry;
use crate::scan::{self, Message};

use super::quiet::Quiet;

/// The steps cordon answers only with "continue" (it decides at
/// end-of-message): offered by the MTA, it is asked not to wait for their
/// replies (see the milter::quiet module).
const NO_REPLY_STEPS: Protocol = Protocol::NR_CONNECT
    .union(Protocol::NR_HELO)
    .union(Protocol::NR_MAIL)
    .union(Protocol::NR_RECIPIENT)
    .union(Protocol::NR_DATA)
    .union(Protocol::NR_UNKNOWN)
    .union(Protocol::NR_END_OF_HEADER)
    .union(Protocol::NR_HEADER)
    .union(Protocol::NR_BODY);

/// Steps cordon has no use for: offered, the MTA is asked not to send them.
const UNSENT_STEPS: Protocol = Protocol::NO_DATA.union(Protocol::NO_UNKNOWN);

/// When a session last heard a complete command from its MTA, and whether
/// it is scanning (waiting on the engines, not on the MTA). The daemon
/// reads it to close sessions that stall and to pick the idlest session
/// to close when all are taken.
#[derive(Debug)]
pub struct Pulse {
    started: std::time::Instant,
    last_ms: std::sync::atomic::AtomicU64,
    scanning: std::sync::atomic::AtomicBool,
    /// Notified to close the session.
    pub evict: tokio::sync::Notify,
}

impl Default for Pulse {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            last_ms: Default::default(),
            scanning: Default::default(),
            evict: Default::default(),
        }
    }
}

impl Pulse {
    /// A complete command arrived.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long the session has waited on its MTA; zero while it scans.
    pub fn idle(&self) -> std::time::Duration {
        if self.scanning.load(std::sync::atomic::Ordering::Relaxed) {
            return std::time::Duration::ZERO;
        }
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.started
            .elapsed()
            .saturating_sub(std::time::Duration::from_millis(last))
    }

    fn set_scanning(&self, on: bool) {
        self.scanning
            .store(on, std::sync::atomic::Ordering::Relaxed);
        self.beat();
    }
}

/// Bytes of a header name kept for the header list.
const MAX_HEADER_NAME_KEPT: usize = 128;

/// One message in progress.
#[derive(Default)]
struct Transaction {
    mail_from: String,
    recipients: Vec<String>,
    auth_user: Option<String>,
    queue_id: Option<String>,
    header_names: Vec<String>,
    bytes: Vec<u8>,
    size: u64,
    in_body: bool,
    /// Headers and recipients seen, kept or not.
    headers_seen: u64,
    recipients_seen: u64,
}

/// One milter connection.
pub struct Session {
    registry: Arc<Registry>,
    busy: watch::Sender<bool>,
    pulse: Arc<Pulse>,
    limits: SessionLimits,
    /// The largest message any enabled engine takes; bytes past it are
    /// counted, not kept.
    keep_bytes: u64,
    client_name: String,
    client_address: Option<IpAddress>,
    helo: String,
    mta_host: Option<String>,
    tx: Transaction,
    /// The steps the MTA agreed not to wait for, and the replies the
    /// stream is to drop.
    no_reply: Protocol,
    quiet: Quiet,
}

impl Session {
    /// A session; `busy` is set while a message is in progress, so that
    /// shutdown waits for it.
    pub fn new(registry: Arc<Registry>, busy: watch::Sender<bool>, pulse: Arc<Pulse>) -> Self {
        let limits = registry.live().session.clone();
        let keep_bytes = registry
            .enabled()
            .iter()
            .map(|g| g.limits.max_message_bytes)
            .max()
            .unwrap_or(0);
        Self {
            registry,
            busy,
            pulse,
            limits,
            keep_bytes,
            client_name: String::new(),
            client_address: None,
            helo: String::new(),
            mta_host: None,
            tx: Transaction::default(),
            no_reply: Protocol::empty(),
            quiet: Quiet::default(),
        }
    }

    /// The replies this session tells its stream to drop: wrap the stream
    /// under the server in a `QuietStream` (milter::quiet) with it.
    pub fn quiet(&self) -> Quiet {
        self.quiet.clone()
    }

    /// "Continue", not sent when the MTA agreed not to wait for `step`.
    fn carry_on(&self, step: Protocol) -> MilterAction {
        if self.no_reply.contains(step) {
            self.quiet.expect_unsent();
        }
        Continue.into()
    }

    fn reset(&mut self) {
        self.tx = Transaction::default();
        self.busy.send_replace(false);
    }

    fn append(&mut self, data: &[u8]) {
        self.tx.size += data.len() as u64;
        let room = self.keep_bytes.saturating_sub(self.tx.bytes.len() as u64);
        let take = (data.len() as u64).min(room) as usize;
        self.tx.bytes.extend_from_slice(&data[..take]);
    }

    fn envelope(&self, live: &LiveSettings) -> Envelope {
        Envelope {
            client_address: self.client_address,
            client_name: self.client_name.clone(),
            helo: self.helo.clone(),
            // The contract's addresses are bare; the MTA's are SMTP paths.
            mail_from: bare_address(&self.tx.mail_from).to_string(),
            recipients: self
                .tx
                .recipients
                .iter()
                .map(|r| EnvRecipient {
                    address: bare_address(r).to_string(),
                    profiles: live.profiles_of(r),
                })
                .collect(),
            authenticated_user: self.tx.auth_user.clone(),
            queue_id: self.tx.queue_id.clone(),
        }
    }
}

/// The raw fields of a milter packet (`name\0value\0`, `addr\0args...`).
fn raw_fields(w: &impl Writable) -> Vec<Vec<u8>> {
    let mut buf = BytesMut::new();
    w.write(&mut buf);
    let mut fields: Vec<Vec<u8>> = buf[..].split(|&b| b == 0).map(<[u8]>::to_vec).collect();
    if fields.last().is_some_and(Vec::is_empty) {
        fields.pop();
    }
    fields
}

/// Postfix sends `ipv6:` before IPv6 addresses in some places; brackets too.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let s = s
        .strip_prefix("IPv6:")
        .or_else(|| s.strip_prefix("ipv6:"))
        .unwrap_or(s);
    s.parse().ok()
}

/// The milter response for a decision. `recipients` are the transaction's
/// recipients as the MTA gave them: a recipient the decision removes (by
/// its bare address, as engines see it) is named to the MTA that way.
pub fn response(d: &Decision, recipients: &[String]) -> ModificationResponse {
    let mut b = ModificationResponse::builder();
    match d.action {
        Action::Reject | Action::Tempfail => {
            let reply = d.reply.clone().unwrap_or_else(|| {
                if d.action == Action::Reject {
                    crate::policy::Reply::default_reject()
                } else {
                    crate::policy::Reply::default_tempfail()
                }
            });
            let digits = |n: u16| [(n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8];
            let mut x = [0u16; 3];
            for (slot, p) in x.iter_mut().zip(reply.status.split('.')) {
                *slot = p.parse().unwrap_or(0);
            }
            b.build(Replycode::new(digits(reply.code), x, &reply.text))
        }
        Action::Discard => b.build(MilterAction::from(Discard)),
        Action::Accept | Action::Quarantine => {
            for r in &d.remove_headers {
                b.push(ChangeHeader::new(r.index, r.name.as_bytes(), b""));
            }
            for (name, value) in &d.add_headers {
                b.push(AddHeader::new(name.as_bytes(), value.as_bytes()));
            }
            for e in &d.recipients {
                match e {
                    RecipientEdit::Delete(a) => {
                        let raw = recipients
                            .iter()
                            .find(|r| bare_address(r) == a)
                            .cloned()
                            .unwrap_or_else(|| format!("<{a}>"));
                        b.push(DeleteRecipient::new(raw.as_bytes()))
                    }
                    RecipientEdit::Add(a) => b.push(AddRecipient::new(a.as_bytes())),
                }
            }
            if let Some(reason) = &d.quarantine {
                b.push(Quarantine::new(reason.as_bytes()));
            }
            b.build(MilterAction::from(Continue))
        }
    }
}

#[async_trait]
impl Milter for Session {
    type Error = std::convert::Infallible;

    async fn option_negotiation(
        &mut self,
        theirs: OptNeg,
    ) -> Result<OptNeg, miltr_server::Error<Self::Error>> {
        let mut ours = OptNeg::default()
            .merge_compatible(&theirs)
            .map_err(miltr_common::ProtocolError::CompatibilityError)?;
        ours.protocol |= theirs.protocol & (NO_REPLY_STEPS | UNSENT_STEPS);
        self.no_reply = ours.protocol & NO_REPLY_STEPS;
        Ok(ours)
    }

    async fn macro_(&mut self, m: Macro) -> Result<(), Self::Error> {
        self.pulse.beat();
        for (k, v) in m.macros() {
            let v = String::from_utf8_lossy(v).into_owned();
            match k {
                b"i" if !v.is_empty() => self.tx.queue_id = Some(v),
                b"j" if !v.is_empty() => self.mta_host = Some(v),
                b"{auth_authen}" if !v.is_empty() => self.tx.auth_user = Some(v),
                _ => {}
            }
        }
        Ok(())
    }

    async fn connect(&mut self, c: Connect) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.client_name = c.hostname().into_owned();
        self.client_address = parse_ip(&c.address()).map(crate::bindings::ip_address);
        Ok(self.carry_on(Protocol::NR_CONNECT))
    }

    async fn helo(&mut self, h: Helo) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.helo = h.helo().trim_end_matches('\0').to_string();
        Ok(self.carry_on(Protocol::NR_HELO))
    }

    async fn mail(&mut self, m: Mail) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        // A new transaction; the macros for it arrive just before this.
        let queue_id = self.tx.queue_id.take();
        let auth_user = self.tx.auth_user.take();
        self.tx = Transaction {
            queue_id,
            auth_user,
            ..Transaction::default()
        };
        self.tx.mail_from = raw_fields(&m)
            .first()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .unwrap_or_default();
        self.busy.send_replace(true);
        Ok(self.carry_on(Protocol::NR_MAIL))
    }

    async fn rcpt(&mut self, r: Recipient) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.tx.recipients_seen += 1;
        if self.tx.recipients_seen > u64::from(self.limits.max_recipients) {
            return Ok(self.carry_on(Protocol::NR_RECIPIENT));
        }
        if let Some(a) = raw_fields(&r).first() {
            self.tx
                .recipients
                .push(String::from_utf8_lossy(a).into_owned());
        }
        Ok(self.carry_on(Protocol::NR_RECIPIENT))
    }

    async fn header(&mut self, h: Header) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.tx.headers_seen += 1;
        if self.tx.headers_seen > u64::from(self.limits.max_headers) {
            // Counted, not kept: the message is judged as over the limit.
            let (name, value) = (h.name(), h.value());
            self.tx.size += (name.len() + value.len() + 4) as u64;
            return Ok(self.carry_on(Protocol::NR_HEADER));
        }
        let mut f = raw_fields(&h).into_iter();
        let name = f.next().unwrap_or_default();
        let value = f.next().unwrap_or_default();
        // Names are kept to find forged copies of ours (all short): a long
        // name is kept cut, so the list stays small.
        let kept = &name[..name.len().min(MAX_HEADER_NAME_KEPT)];
        self.tx
            .header_names
            .push(String::from_utf8_lossy(kept).into_owned());
        // Postfix folds long values with bare LF; the message is CRLF.
        let mut line = name;
        line.extend_from_slice(b": ");
        let mut prev = 0u8;
        for &b in &value {
            if b == b'\n' && prev != b'\r' {
                line.push(b'\r');
            }
            line.push(b);
            prev = b;
        }
        line.extend_from_slice(b"\r\n");
        self.append(&line);
        Ok(self.carry_on(Protocol::NR_HEADER))
    }

    async fn end_of_header(&mut self) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.append(b"\r\n");
        self.tx.in_body = true;
        Ok(self.carry_on(Protocol::NR_END_OF_HEADER))
    }

    async fn body(&mut self, b: Body) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        self.append(b.as_bytes());
        Ok(self.carry_on(Protocol::NR_BODY))
    }

    async fn data(&mut self) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        Ok(self.carry_on(Protocol::NR_DATA))
    }

    async fn unknown(&mut self, _cmd: Unknown) -> Result<MilterAction, Self::Error> {
        self.pulse.beat();
        Ok(self.carry_on(Protocol::NR_UNKNOWN))
    }

    async fn end_of_body(&mut self) -> Result<ModificationResponse, Self::Error> {
        if !self.tx.in_body {
            // No end-of-headers came (a client that skipped it): the message
            // still needs its blank line.
            self.append(b"\r\n");
        }
        self.pulse.set_scanning(true);
        let live = self.registry.live();
        let envelope = self.envelope(&live);
        let tx = std::mem::take(&mut self.tx);
        // Past a per-message bound the message cannot be handed whole to
        // the engines: judged as too large, never passed unscanned.
        let over = tx.headers_seen > u64::from(self.limits.max_headers)
            || tx.recipients_seen > u64::from(self.limits.max_recipients);
        let size = if over {
            tx.size.max(tx.bytes.len() as u64 + 1)
        } else {
            tx.size
        };
        let message = Message {
            envelope: Arc::new(envelope),
            bytes: tx.bytes.into(),
        };
        let registry = &self.registry;
        let id = scan::scan_id();
        let host = live.host_name.as_deref().or(self.mta_host.as_deref());
        let judged = judge(
            &registry.enabled(),
            registry.cache.as_ref(),
            &live.rules,
            Case {
                message: &message,
                size,
                header_names: &tx.header_names,
                scan_id: &id,
                host,
            },
        )
        .await;
        log_line(&message, tx.size, &id, &judged);
        if over {
            tracing::warn!(
                target: "cordon::message",
                scan_id = %id,
                headers = tx.headers_seen,
                recipients = tx.recipients_seen,
                "message over milter.max_headers or milter.max_recipients: not scanned"
            );
        }
        self.pulse.set_scanning(false);
        // The busy flag stays up until the MTA ends the transaction
        // (abort) or the connection, so shutdown never cuts this reply off.
        Ok(response(&judged.decision, &tx.recipients))
    }

    async fn abort(&mut self) -> Result<(), Self::Error> {
        self.pulse.beat();
        self.reset();
        Ok(())
    }

    async fn quit(&mut self) -> Result<(), Self::Error> {
        self.reset();
        Ok(())
    }
}

/// The one log line per message.
fn log_line(message: &Message, size: u64, id: &str, j: &Judged) {
    let d = &j.decision;
    let mut engines = Vec::new();
    for e in &d.engines {
        let ms = j
            .report
            .results
            .iter()
            .find(|r| *r.engine == e.engine)
            .map(|r| (r.timing.queued + r.timing.run).as_secs_f64() * 1000.0);
        engines.push(match ms {
            Some(ms) => format!("{}={}({ms:.1}ms)", e.engine, e.outcome),
            None => format!("{}={}", e.engine, e.outcome),
        });
    }
    let threats = crate::policy::threat_names(&d.threats);
    let reply = d.reply.as_ref().map(|r| r.to_string()).unwrap_or_default();
    let recipient_edits = d.recipients.len();
    tracing::info!(
        target: "cordon::message",
        scan_id = %id,
        queue_id = %message.envelope.queue_id.as_deref().unwrap_or("-"),
        from = %message.envelope.mail_from,
        recipients = message.envelope.recipients.len(),
        size,
        engines = %engines.join(" "),
        threats = %threats,
        action = d.action.as_str(),
        reply = %reply,
        recipient_edits,
        elapsed_ms = format!("{:.1}", j.report.elapsed.as_secs_f64() * 1000.0),
        "message"
    );
    for note in &d.ignored {
        tracing::warn!(target: "cordon::message", scan_id = %id, "ignored: {note}");
    }
}
