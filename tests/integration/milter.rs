//! Milter sessions driven by a real milter client (miltr-client): over an
//! in-memory duplex for every action the policy can take, and over unix and
//! TCP (IPv4, IPv6) sockets through [`cordon::milter::serve`] for the
//! listener, a client that drops mid-message, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use cordon::daemon::{Daemon, Running};
use cordon::listen::ListenAddr;
use cordon::milter::run_session;
use cordon::registry::Registry;
use miltr_client::Client;
use miltr_common::actions::Action;
use miltr_common::commands::{Connect, Family, Header};
use miltr_common::modifications::{ModificationAction, ModificationResponse};
use miltr_common::optneg::OptNeg;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::common::*;

/// The engines and live settings of config text (engines added by the
/// caller), with the host name `mx.test`.
fn shared(text: &str) -> Arc<Registry> {
    let mut config = config_from_toml(&format!("cache_dir = {}\n{text}", toml_path(&cache_dir())));
    config.registry.live.host_name = Some("mx.test".into());
    Arc::new(Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e:#}")))
}

/// A daemon started from config text as `cordon serve` starts it (the
/// watcher off), with the host name `mx.test`.
async fn daemon(text: &str) -> Running {
    let mut config = config_from_toml(&format!(
        "cache_dir = {}\nreload.watch = false\n{text}",
        toml_path(&cache_dir())
    ));
    config.registry.live.host_name = Some("mx.test".into());
    Daemon::start(config)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn testsig(extra: &str) -> String {
    format!(
        "[engines.testsig]\ncomponent = {}\n{extra}\n",
        toml_path(&component("testsig"))
    )
}

fn hanging(extra: &str) -> String {
    format!(
        "[engines.hang]\ncomponent = {}\nsettings.mode = \"loop\"\nlimits.timeout_ms = 100\n{extra}\n",
        toml_path(&component("hostile"))
    )
}

/// One message as the MTA sends it.
pub(crate) struct Mail<'a> {
    pub client: &'a str,
    pub rcpts: &'a [&'a str],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a str,
}

impl Default for Mail<'_> {
    fn default() -> Self {
        Mail {
            client: "192.0.2.10",
            rcpts: &["<dave@in.test>"],
            headers: &[("From", "a@outside.test"), ("Subject", "test")],
            body: "hello\r\n",
        }
    }
}

/// Runs one milter conversation over `stream` and returns cordon's answer
/// to end-of-message.
pub(crate) async fn converse<S>(stream: S, mail: &Mail<'_>) -> ModificationResponse
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client = Client::new(OptNeg::default());
    let mut c = client
        .connect_via(stream.compat())
        .await
        .expect("option negotiation");
    let family = if mail.client.contains(':') {
        Family::Inet6
    } else {
        Family::Inet
    };
    c.connect(Connect::new(
        b"client.test",
        family,
        Some(40000),
        mail.client.as_bytes(),
    ))
    .await
    .expect("connect");
    c.helo(b"client.test".as_slice()).await.expect("helo");
    c.mail(b"<a@outside.test>".as_slice()).await.expect("mail");
    for r in mail.rcpts {
        c.recipient(r.as_bytes()).await.expect("rcpt");
    }
    c.data().await.expect("data");
    for (n, v) in mail.headers {
        c.header(Header::new(n.as_bytes(), v.as_bytes()))
            .await
            .expect("header");
    }
    c.end_of_header().await.expect("eoh");
    // The milter protocol carries the body in chunks of at most 64 KiB.
    for chunk in mail.body.as_bytes().chunks(65_535) {
        c.body(chunk).await.expect("body");
    }
    let r = c.end_of_body().await.expect("end of body");
    c.quit().await.expect("quit");
    r
}

/// A session over an in-memory duplex.
pub(crate) async fn session(shared: &Arc<Registry>, mail: &Mail<'_>) -> ModificationResponse {
    let (mta, milter) = tokio::io::duplex(1 << 16);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(run_session(milter, "duplex", shared.clone(), stop_rx));
    let r = converse(mta, mail).await;
    server.await.expect("session task");
    r
}

pub(crate) fn added(r: &ModificationResponse, name: &str) -> Vec<String> {
    r.modifications()
        .iter()
        .filter_map(|m| match m {
            ModificationAction::AddHeader(h) if h.name() == name => Some(h.value().into_owned()),
            _ => None,
        })
        .collect()
}

pub(crate) fn reply(r: &ModificationResponse) -> String {
    match r.final_action() {
        Action::Replycode(c) => {
            let code: String = c.rcode().code().iter().map(|d| d.to_string()).collect();
            let x = c
                .xcode()
                .as_ref()
                .map(|x| {
                    x.code()
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .unwrap_or_default();
            format!("{code} {x} {}", c.message())
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn is_continue(r: &ModificationResponse) -> bool {
    matches!(r.final_action(), Action::Continue(_))
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_adds_headers_and_removes_forged_ones() {
    let s = shared(&testsig(""));
    let r = session(
        &s,
        &Mail {
            headers: &[
                ("From", "a@outside.test"),
                ("X-Virus-Status", "Clean"),
                ("x-virus-status", "Clean"),
            ],
            ..Mail::default()
        },
    )
    .await;
    assert!(is_continue(&r), "{r:?}");
    assert_eq!(added(&r, "X-Virus-Status"), ["Clean"]);
    assert_eq!(
        added(&r, "X-Virus-Scanned"),
        [concat!("cordon ", env!("CARGO_PKG_VERSION"), " at mx.test")]
    );
    let scan = added(&r, "X-Cordon-Scan");
    assert!(
        scan.len() == 1 && scan[0].starts_with("id=") && scan[0].ends_with("; testsig=clean"),
        "{scan:?}"
    );
    let removed: Vec<(u32, String)> = r
        .modifications()
        .iter()
        .filter_map(|m| match m {
            ModificationAction::ChangeHeader(h) => {
                assert!(h.value().is_empty(), "a removal has an empty value");
                Some((h.index(), h.name().into_owned()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        removed,
        [
            (1, "X-Virus-Status".to_string()),
            (2, "x-virus-status".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reject_with_the_configured_text() {
    let s = shared(&format!(
        "[policy]\nreject = {{ code = 554, status = \"5.7.0\", text = \"Virus %v refused\" }}\n{}",
        testsig("")
    ));
    let body = format!("{}\r\n", eicar());
    let r = session(
        &s,
        &Mail {
            body: &body,
            ..Mail::default()
        },
    )
    .await;
    assert_eq!(reply(&r), "554 5.7.0 Virus Eicar-Test-Signature refused");
    assert!(r.modifications().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn tempfail_when_an_engine_hangs_and_accept_when_configured() {
    let s = shared(&format!("{}{}", testsig(""), hanging("")));
    let r = session(&s, &Mail::default()).await;
    assert_eq!(
        reply(&r),
        "451 4.7.1 Message could not be scanned, try again later"
    );

    let s = shared(&format!(
        "{}{}",
        testsig(""),
        hanging("on_error = { timeout = \"accept\" }")
    ));
    let r = session(&s, &Mail::default()).await;
    assert!(is_continue(&r), "{r:?}");
    assert_eq!(added(&r, "X-Virus-Status"), ["Not scanned (hang: timeout)"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn discard_quarantine_and_tag() {
    let body = format!("{}\r\n", eicar());
    let mail = Mail {
        body: &body,
        ..Mail::default()
    };
    let r = session(&shared(&testsig("on_detect = \"discard\"")), &mail).await;
    assert!(matches!(r.final_action(), Action::Discard(_)), "{r:?}");

    let r = session(&shared(&testsig("on_detect = \"quarantine\"")), &mail).await;
    assert!(is_continue(&r), "{r:?}");
    let reasons: Vec<String> = r
        .modifications()
        .iter()
        .filter_map(|m| match m {
            // miltr-common's parser keeps the wire's terminating NUL.
            ModificationAction::Quarantine(q) => {
                Some(q.reason().trim_end_matches('\0').to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1);
    assert!(
        reasons[0].ends_with(": Eicar-Test-Signature found"),
        "{reasons:?}"
    );

    let r = session(&shared(&testsig("on_detect = \"tag\"")), &mail).await;
    assert!(is_continue(&r), "{r:?}");
    assert_eq!(
        added(&r, "X-Virus-Status"),
        ["Infected (Eicar-Test-Signature)"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_recipient_drop_alternate_and_all_dropped() {
    let config = format!(
        "[headers]\nalternate = \"replace\"\n\
         [profiles]\nspam-drop = [\"bob@in.test\"]\nspam-alternate = [\"@alt.test\"]\n{}",
        testsig("on_detect = \"tag\"\nsettings.alternate_location = \"spam@in.test\"")
    );
    let s = shared(&config);
    let body = format!("{}\r\n", gtube());
    let r = session(
        &s,
        &Mail {
            rcpts: &["<dave@in.test>", "<Bob@in.test>", "<carol@alt.test>"],
            body: &body,
            ..Mail::default()
        },
    )
    .await;
    assert!(is_continue(&r), "{r:?}");
    let edits: Vec<String> = r
        .modifications()
        .iter()
        .filter_map(|m| match m {
            ModificationAction::DeleteRecipient(d) => Some(format!("-{}", d.recipient())),
            ModificationAction::AddRecipient(a) => Some(format!("+{}", a.recipient())),
            _ => None,
        })
        .collect();
    assert_eq!(
        edits,
        ["-<Bob@in.test>", "-<carol@alt.test>", "+<spam@in.test>"]
    );
    assert_eq!(added(&r, "X-Spam-Flag"), ["YES"]);
    assert_eq!(
        added(&r, "X-Spam-Status"),
        ["Yes, score=1000.0 required=5.0 tests=GTUBE"]
    );

    let r = session(
        &s,
        &Mail {
            rcpts: &["<bob@in.test>"],
            body: &body,
            ..Mail::default()
        },
    )
    .await;
    assert!(matches!(r.final_action(), Action::Discard(_)), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn skip_rules_leave_the_engine_out() {
    // The hanging engine is skipped for the internal network only.
    let s = shared(&format!(
        "{}{}",
        testsig(""),
        hanging("skip.client_networks = [\"10.0.0.0/8\", \"2001:db8::/32\"]")
    ));
    for client in ["10.1.2.3", "2001:db8::5"] {
        let r = session(
            &s,
            &Mail {
                client,
                ..Mail::default()
            },
        )
        .await;
        assert!(is_continue(&r), "{client}: {r:?}");
        let scan = added(&r, "X-Cordon-Scan");
        assert!(
            scan[0].ends_with("; testsig=clean; hang=skipped:client-network"),
            "{scan:?}"
        );
    }
    let r = session(&s, &Mail::default()).await;
    assert!(reply(&r).starts_with("451 "), "{}", reply(&r));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_every_engine_limit_is_not_kept_and_tempfails() {
    let s = shared(&testsig("limits.max_message_bytes = 1000"));
    let body = "x".repeat(5000);
    let r = session(
        &s,
        &Mail {
            body: &body,
            ..Mail::default()
        },
    )
    .await;
    assert!(reply(&r).starts_with("451 4.7.1"), "{}", reply(&r));

    // Unless big messages skip the engine.
    let s = shared(&testsig(
        "limits.max_message_bytes = 1000\nskip.larger_than_bytes = 1000",
    ));
    let r = session(
        &s,
        &Mail {
            body: &body,
            ..Mail::default()
        },
    )
    .await;
    assert!(is_continue(&r), "{r:?}");
    assert_eq!(
        added(&r, "X-Cordon-Scan")[0].split("; ").nth(1),
        Some("testsig=skipped:size")
    );
}

/// Connects a stream to `addr`.
async fn dial(addr: &ListenAddr) -> Box<dyn Duplex> {
    match addr {
        ListenAddr::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await.expect("unix")),
        ListenAddr::Tcp(a) => Box::new(tokio::net::TcpStream::connect(a).await.expect("tcp")),
    }
}
trait Duplex: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Duplex for T {}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_dropped_clients_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let running = daemon(&format!(
        "milter.listen = [\"unix:{}\", \"inet:0@127.0.0.1\", \"inet6:0@::1\"]\n\
         milter.max_sessions = 4\nmilter.shutdown_timeout_s = 30\n{}",
        dir.path().join("m.sock").display(),
        testsig("")
    ))
    .await;
    let addrs: Vec<ListenAddr> = running.milter_addrs();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));

    // A client that drops in the middle of a message does no harm.
    {
        let client = Client::new(OptNeg::default());
        let mut c = client
            .connect_via(dial(&addrs[0]).await.compat())
            .await
            .unwrap();
        c.mail(b"<a@outside.test>".as_slice()).await.unwrap();
        c.recipient(b"<dave@in.test>".as_slice()).await.unwrap();
        c.data().await.unwrap();
        c.body(b"half a mess".as_slice()).await.unwrap();
    }
    // Every socket serves a full session, EICAR rejected.
    let body = format!("{}\r\n", eicar());
    for a in &addrs {
        let r = converse(
            dial(a).await,
            &Mail {
                body: &body,
                ..Mail::default()
            },
        )
        .await;
        assert!(reply(&r).starts_with("550 5.7.1"), "{a}: {}", reply(&r));
    }

    // A session in the middle of a message when shutdown begins.
    let client = Client::new(OptNeg::default());
    let mut c = client
        .connect_via(dial(&addrs[0]).await.compat())
        .await
        .unwrap();
    c.mail(b"<a@outside.test>".as_slice()).await.unwrap();
    c.recipient(b"<dave@in.test>".as_slice()).await.unwrap();
    c.data().await.unwrap();
    c.header(Header::new(b"Subject", b"in flight"))
        .await
        .unwrap();
    c.end_of_header().await.unwrap();
    c.body(body.as_bytes()).await.unwrap();
    stop_tx.send(()).unwrap();
    // Shutdown has begun once the unix socket is gone.
    let sock = match &addrs[0] {
        ListenAddr::Unix(p) => p.clone(),
        _ => unreachable!(),
    };
    let mut waited = 0;
    while sock.exists() {
        assert!(waited < 3000, "the socket is still there after 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    // The message in flight still gets its answer.
    let r = c.end_of_body().await.expect("answer after shutdown began");
    assert!(reply(&r).starts_with("550 5.7.1"), "{}", reply(&r));
    c.quit().await.unwrap();
    let served = daemon.await.unwrap();
    assert_eq!(served, 5);
}

/// Reads from `s` until the daemon closes it; the bytes it sent first.
async fn read_until_closed(s: &mut Box<dyn Duplex>) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_slow_clients_are_closed_and_cannot_lock_others_out() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let running = daemon(&format!(
        "milter.command_timeout_s = 1\nmilter.listen = [\"unix:{}\"]\n\
         milter.max_sessions = 2\nmilter.shutdown_timeout_s = 5\n{}",
        dir.path().join("m.sock").display(),
        testsig("")
    ))
    .await;
    let addr = running.milter_addrs().remove(0);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(running.run(async {
        let _ = stop_rx.await;
    }));
    let deadline = Duration::from_secs(30);

    // Idle: closed after the command timeout, without a byte from us.
    let mut idle = dial(&addr).await;
    tokio::time::timeout(deadline, read_until_closed(&mut idle))
        .await
        .expect("an idle session is closed")
        .expect("read");

    // Slow: a packet length, then one byte at a time, never a whole
    // command within the timeout.
    let mut slow = dial(&addr).await;
    let dripping = async {
        slow.write_all(&[0, 0, 0, 100]).await?;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            slow.write_all(b"x").await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let closed = tokio::time::timeout(deadline, dripping).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "a client sending one byte at a time was not cut off: {closed:?}"
    );

    // Every session taken by idle connections: a client that makes
    // progress still gets through, and an idle one is closed for it.
    let mut holders = vec![dial(&addr).await, dial(&addr).await];
    // Both must have waited past EVICT_IDLE_AFTER to be evictable; that
    // wait is the behaviour under test, not a stand-in for an event.
    tokio::time::sleep(cordon::milter::EVICT_IDLE_AFTER).await;
    let r = tokio::time::timeout(
        deadline,
        converse(
            dial(&addr).await,
            &Mail {
                body: &format!("{}\r\n", eicar()),
                ..Mail::default()
            },
        ),
    )
    .await
    .expect("a new client is served while idle ones hold every session");
    assert!(reply(&r).starts_with("550 5.7.1"), "{}", reply(&r));
    for h in &mut holders {
        tokio::time::timeout(deadline, read_until_closed(h))
            .await
            .expect("idle holders are closed")
            .expect("read");
    }
    stop_tx.send(()).unwrap();
    daemon.await.unwrap();
}

#[tokio::test]
async fn too_many_headers_or_recipients_are_not_scanned_but_deferred() {
    let s = shared(&format!(
        "milter.max_headers = 50\nmilter.max_recipients = 3\n{}",
        testsig("")
    ));
    let many: Vec<(String, String)> = (0..500)
        .map(|i| (format!("X-H{i}"), "v".to_string()))
        .collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let r = session(
        &s,
        &Mail {
            headers: &headers,
            ..Mail::default()
        },
    )
    .await;
    assert!(reply(&r).starts_with("451"), "{}", reply(&r));

    let r = session(
        &s,
        &Mail {
            rcpts: &["<a@in.test>", "<b@in.test>", "<c@in.test>", "<d@in.test>"],
            ..Mail::default()
        },
    )
    .await;
    assert!(reply(&r).starts_with("451"), "{}", reply(&r));

    // Within the bounds, the same session code accepts.
    let r = session(&s, &Mail::default()).await;
    assert!(!reply(&r).starts_with("451"), "{}", reply(&r));
}
