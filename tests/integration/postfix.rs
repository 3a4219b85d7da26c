//! cordon inside a real Postfix: a private Postfix instance on loopback
//! whose smtpd services call `cordon serve` daemons as milters, over a unix
//! socket and over TCP; swaks sends the mail, and the test checks what swaks
//! is told and what the Maildir sink receives.
//!
//! Needs root and the Debian packages `postfix` and `swaks`, which `./dev
//! test` installs; without them the test fails and says so.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::pf::{Daemon, Postfix, free_port, require, run, scratch};

/// `cordon serve --config config`, ready.
pub(crate) fn cordon_serve(config: &Path) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cordon"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("CORDON_LOG", "info");
    Daemon::start(cmd, "ready in")
}

/// What swaks was told at the end of DATA.
struct Sent {
    /// The reply line, e.g. `250 2.0.0 Ok: queued as 4F2A1`.
    reply: String,
    /// The queue id, for accepted mail.
    queue_id: Option<String>,
}

fn swaks(port: u16, to: &str, subject: &str, body: &str, headers: &[&str]) -> Sent {
    let mut cmd = Command::new("swaks");
    cmd.args(["--server", &format!("127.0.0.1:{port}")])
        .args(["--from", "alice@outside.test", "--to", to])
        .args(["--header", &format!("Subject: {subject}")])
        .args(["--body", body]);
    for h in headers {
        cmd.args(["--add-header", h]);
    }
    let out = cmd.output().expect("running swaks");
    let text = stdout(&out);
    // The line after the lone "." that ends DATA is the reply to it.
    let lines: Vec<&str> = text.lines().collect();
    let dot = lines
        .iter()
        .position(|l| l.trim() == "-> .")
        .unwrap_or_else(|| panic!("swaks sent no DATA:\n{text}{}", stderr(&out)));
    let reply = lines[dot + 1..]
        .iter()
        .find(|l| l.starts_with('<'))
        .map(|l| l.trim_start_matches(['<', '*', '-', ' ']).to_string())
        .unwrap_or_else(|| panic!("no reply to DATA:\n{text}"));
    let queue_id = reply
        .split("queued as ")
        .nth(1)
        .map(|q| q.trim().to_string());
    assert_eq!(
        out.status.success(),
        reply.starts_with('2'),
        "swaks exit status and reply disagree: {reply}"
    );
    Sent { reply, queue_id }
}

fn header_values<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    let head = message.split("\n\n").next().unwrap_or("");
    head.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
        .collect()
}

#[test]
fn postfix_with_cordon_milters() {
    require(&["postfix", "postconf", "postqueue", "swaks"]);
    let dir = scratch("cordon-postfix-");
    let d = dir.path();
    let cache = toml_path(&cache_dir());
    let testsig = toml_path(&component("testsig"));
    let clamsig = toml_path(&component("clamsig"));
    let defs = toml_path(&root().join("engines/clamsig/definitions"));

    // A: both engines, the configured reject text, unix and TCP.
    let tcp = free_port();
    let a_sock = d.join("a.sock");
    let a_cfg = d.join("a.toml");
    std::fs::write(
        &a_cfg,
        format!(
            "cache_dir = {cache}\n\
             [milter]\nlisten = [\"unix:{}\", \"inet:{tcp}@127.0.0.1\"]\nsocket_mode = \"0666\"\n\
             [policy]\nreject.text = \"Rejected by cordon: %v\"\n\
             [engines.testsig]\ncomponent = {testsig}\n\
             [engines.clamsig]\ncomponent = {clamsig}\ndefinitions = {defs}\n",
            a_sock.display()
        ),
    )
    .unwrap();
    // B: per-recipient verdicts; spam tagged, viruses quarantined.
    let b_sock = d.join("b.sock");
    let b_cfg = d.join("b.toml");
    std::fs::write(
        &b_cfg,
        format!(
            "cache_dir = {cache}\n\
             [milter]\nlisten = [\"unix:{}\"]\nsocket_mode = \"0666\"\n\
             [headers]\nalternate = \"replace\"\n\
             [profiles]\nspam-drop = [\"bob@sink.test\"]\nspam-alternate = [\"carol@sink.test\"]\n\
             [engines.testsig]\ncomponent = {testsig}\n\
             on_detect = {{ default = \"tag\", virus = \"quarantine\" }}\n\
             settings.alternate_location = \"spam@sink.test\"\n",
            b_sock.display()
        ),
    )
    .unwrap();
    // C: an engine that hangs, with the configured tempfail text.
    let c_sock = d.join("c.sock");
    let c_cfg = d.join("c.toml");
    std::fs::write(
        &c_cfg,
        format!(
            "cache_dir = {cache}\n\
             [milter]\nlisten = [\"unix:{}\"]\nsocket_mode = \"0666\"\n\
             [policy]\ntempfail.text = \"Scanner unavailable, try later\"\n\
             [engines.testsig]\ncomponent = {testsig}\n\
             [engines.hang]\ncomponent = {}\nsettings.mode = \"loop\"\nlimits.timeout_ms = 300\n",
            c_sock.display(),
            toml_path(&component("hostile"))
        ),
    )
    .unwrap();
    let a = cordon_serve(&a_cfg);
    let b = cordon_serve(&b_cfg);
    let c = cordon_serve(&c_cfg);

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let pf = Postfix::start(
        d,
        &[
            (ports[0], format!("unix:{}", a_sock.display())),
            (ports[1], format!("inet:127.0.0.1:{tcp}")),
            (ports[2], format!("unix:{}", b_sock.display())),
            (ports[3], format!("unix:{}", c_sock.display())),
        ],
        "",
    );

    // Clean mail over both transports: 250, delivered with our headers and
    // without the sender's forged ones.
    for (i, port) in [ports[0], ports[1]].into_iter().enumerate() {
        let marker = format!("clean-{i}");
        let sent = swaks(
            port,
            "dave@sink.test",
            &marker,
            "hello",
            &["X-Virus-Status: Clean", "X-Spam-Flag: NO"],
        );
        assert!(sent.reply.starts_with("250 "), "{}", sent.reply);
        let got = pf.delivered(&marker, 1);
        let m = &got[0];
        assert_eq!(header_values(m, "X-Virus-Status"), ["Clean"], "{m}");
        assert_eq!(
            header_values(m, "X-Spam-Flag"),
            ["NO"],
            "the forged one is gone: {m}"
        );
        assert_eq!(
            header_values(m, "X-Virus-Scanned"),
            [concat!(
                "cordon ",
                env!("CARGO_PKG_VERSION"),
                " at mx.test.local"
            )]
        );
        let scan = header_values(m, "X-Cordon-Scan");
        assert!(
            scan.len() == 1 && scan[0].ends_with("; clamsig=clean; testsig=clean"),
            "{scan:?}"
        );
        // One log line for the message, under Postfix's queue id.
        let qid = sent.queue_id.expect("queue id");
        let id = scan[0].trim_start_matches("id=").split(';').next().unwrap();
        // The daemon logs before it answers, but its stderr is read by
        // another thread: wait for the line to arrive.
        let line = a.wait_line(|l| l.contains(&format!("queue_id={qid}")));
        assert!(line.contains(&format!("scan_id={id}")), "{line}");
        assert!(line.contains("action=\"accept\""), "{line}");
    }

    // EICAR and GTUBE: 550 with the configured text, over both transports.
    for port in [ports[0], ports[1]] {
        let sent = swaks(port, "dave@sink.test", "eicar", eicar(), &[]);
        assert_eq!(
            sent.reply,
            "550 5.7.1 Rejected by cordon: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature"
        );
        let sent = swaks(port, "dave@sink.test", "gtube", gtube(), &[]);
        assert_eq!(
            sent.reply,
            "550 5.7.1 Rejected by cordon: Sample.Gtube.UNOFFICIAL, GTUBE"
        );
    }

    // Per-recipient verdicts: bob dropped, carol redirected, dave tagged.
    let sent = swaks(
        ports[2],
        "dave@sink.test,bob@sink.test,carol@sink.test",
        "per-recipient",
        gtube(),
        &[],
    );
    assert!(sent.reply.starts_with("250 "), "{}", sent.reply);
    let qid = sent.queue_id.unwrap();
    let got = pf.delivered("per-recipient", 2);
    let mut to: Vec<&str> = got
        .iter()
        .flat_map(|m| header_values(m, "Delivered-To"))
        .collect();
    to.sort();
    assert_eq!(to, ["dave@sink.test", "spam@sink.test"]);
    for m in &got {
        assert_eq!(header_values(m, "X-Spam-Flag"), ["YES"]);
        assert_eq!(
            header_values(m, "X-Spam-Status"),
            ["Yes, score=1000.0 required=5.0 tests=GTUBE"]
        );
        assert_eq!(header_values(m, "X-Cordon-Rules"), ["testsig:GTUBE"]);
    }
    pf.wait_log(&[&qid, "removed"]);
    assert!(
        !pf.maillog()
            .lines()
            .any(|l| l.contains(&qid) && l.contains("to=<bob@sink.test>")),
        "bob got the message:\n{}",
        pf.maillog()
    );

    // Every recipient dropped: accepted and discarded.
    let sent = swaks(ports[2], "bob@sink.test", "all-dropped", gtube(), &[]);
    assert!(sent.reply.starts_with("250 "), "{}", sent.reply);
    let qid = sent.queue_id.unwrap();
    pf.wait_log(&[&qid, "milter-discard", "DISCARD"]);

    // A virus with on_detect = quarantine: accepted, on hold.
    let sent = swaks(ports[2], "dave@sink.test", "quarantine", eicar(), &[]);
    assert!(sent.reply.starts_with("250 "), "{}", sent.reply);
    let qid = sent.queue_id.unwrap();
    pf.wait_log(&[&qid, "milter-hold", "milter triggers HOLD action"]);
    let queue = run(Command::new("postqueue").arg("-c").arg(&pf.etc).arg("-j"));
    assert!(
        queue
            .lines()
            .any(|l| l.contains(&qid) && l.contains("\"queue_name\": \"hold\"")),
        "{qid} is not on hold:\n{queue}"
    );

    // The engine hangs: 451 with the configured text, nothing delivered.
    let sent = swaks(ports[3], "dave@sink.test", "hang", "hello", &[]);
    assert_eq!(sent.reply, "451 4.7.1 Scanner unavailable, try later");
    c.wait_line(|l| l.contains("hang=timeout") && l.contains("action=\"tempfail\""));

    // SIGTERM: each daemon stops cleanly and removes its socket.
    for (daemon, sock) in [(a, &a_sock), (b, &b_sock), (c, &c_sock)] {
        let (status, log) = daemon.stop();
        assert!(status.success(), "{status}: {log}");
        assert!(log.contains("stopped after"), "{log}");
        assert!(!sock.exists(), "{} is left behind", sock.display());
    }
    drop(pf);
}
