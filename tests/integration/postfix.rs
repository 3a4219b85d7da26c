//! cordon inside a real Postfix: a private Postfix instance on loopback
//! whose smtpd services call `cordon serve` daemons as milters, over a unix
//! socket and over TCP; swaks sends the mail, and the test checks what swaks
//! is told and what the Maildir sink receives.
//!
//! Needs root and the Debian packages `postfix` and `swaks`, which `./dev
//! test` installs; without them the test fails and says so.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::*;

const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn require_tools() {
    assert!(
        is_root(),
        "the Postfix test runs a private Postfix instance and needs root"
    );
    for tool in ["postfix", "postconf", "postqueue", "swaks"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: install postfix and swaks (`./dev test` does)"
        );
    }
}

/// `id -u` says 0.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A running `cordon serve`, its stderr collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts `cordon serve` on `config` and waits for its "ready" line.
    fn start(config: &Path) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cordon"))
            .args(["serve", "--config"])
            .arg(config)
            .env("CORDON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting cordon serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready in") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(300)).is_err() {
            let _ = child.kill();
            panic!(
                "cordon serve {} did not get ready:\n{}",
                config.display(),
                log.lock().unwrap().join("\n")
            );
        }
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        run(Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string()));
        let status = self.child.wait().expect("waiting for cordon");
        let log = self.log();
        (status, log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private Postfix instance.
struct Postfix {
    dir: PathBuf,
    etc: PathBuf,
}

impl Postfix {
    /// Writes the instance under `dir` with one smtpd per (port, milter)
    /// and starts it.
    fn start(dir: &Path, services: &[(u16, String)]) -> Postfix {
        let etc = dir.join("etc");
        for d in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let uid = run(Command::new("id").args(["-u", "postfix"]));
        let gid = run(Command::new("id").args(["-g", "postfix"]));
        run(Command::new("chown")
            .arg("postfix")
            .arg(dir.join("data"))
            .arg(dir.join("mail")));
        std::fs::copy("/etc/postfix/master.cf", etc.join("master.cf")).expect("master.cf");
        let d = dir.display();
        std::fs::write(
            etc.join("main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {d}/queue\n\
                 data_directory = {d}/data\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 myhostname = mx.test.local\n\
                 mydomain = test.local\n\
                 mydestination =\n\
                 inet_interfaces = 127.0.0.1\n\
                 inet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\n\
                 smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_recipient_maps =\n\
                 virtual_mailbox_domains = sink.test\n\
                 virtual_mailbox_base = {d}/mail\n\
                 virtual_mailbox_maps = static:sink/\n\
                 virtual_uid_maps = static:{uid}\n\
                 virtual_gid_maps = static:{gid}\n\
                 default_transport = error:no delivery outside the test\n\
                 relay_transport = error:no delivery outside the test\n\
                 maillog_file = {d}/maillog\n\
                 maillog_file_prefixes = {d}\n\
                 milter_protocol = 6\n\
                 milter_default_action = tempfail\n\
                 non_smtpd_milters =\n\
                 smtputf8_enable = no\n\
                 biff = no\n",
                uid = uid.trim(),
                gid = gid.trim(),
            ),
        )
        .unwrap();
        let postconf = || {
            let mut c = Command::new("postconf");
            c.arg("-c").arg(&etc);
            c
        };
        run(postconf().arg("-M#").arg("smtp/inet"));
        for (port, milter) in services {
            run(postconf().arg("-M").arg(format!(
                "{port}/inet={port} inet n - n - - smtpd -o smtpd_milters={milter}"
            )));
        }
        run(postconf().arg("-F").arg("*/*/chroot = n"));
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start")
            .output()
            .expect("postfix start");
        let pf = Postfix {
            dir: dir.to_path_buf(),
            etc,
        };
        assert!(
            out.status.success(),
            "postfix start failed: {}{}\nmaillog:\n{}",
            stdout(&out),
            stderr(&out),
            pf.maillog()
        );
        pf
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until the mail log has a line containing every one of `parts`.
    fn wait_log(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.maillog();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no mail log line with {parts:?} after 60 s:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Messages delivered to the sink that contain `marker`, once `n` are
    /// there.
    fn delivered(&self, marker: &str, n: usize) -> Vec<String> {
        let new = self.dir.join("mail/sink/new");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found: Vec<String> = std::fs::read_dir(&new)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|m| m.contains(marker))
                .collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} message(s) with {marker:?} delivered after 60 s; mail log:\n{}",
                found.len(),
                self.maillog()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.etc)
            .arg("stop")
            .output();
    }
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
    require_tools();
    let dir = tempfile::Builder::new()
        .prefix("cordon-postfix-")
        .tempdir_in("/tmp")
        .unwrap();
    run(Command::new("chmod").arg("755").arg(dir.path()));
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
    let a = Daemon::start(&a_cfg);
    let b = Daemon::start(&b_cfg);
    let c = Daemon::start(&c_cfg);

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let pf = Postfix::start(
        d,
        &[
            (ports[0], format!("unix:{}", a_sock.display())),
            (ports[1], format!("inet:127.0.0.1:{tcp}")),
            (ports[2], format!("unix:{}", b_sock.display())),
            (ports[3], format!("unix:{}", c_sock.display())),
        ],
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
        let log = a.log();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("queue_id={qid}")))
            .unwrap_or_else(|| panic!("no log line for {qid}:\n{log}"));
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
        let sent = swaks(port, "dave@sink.test", "gtube", GTUBE, &[]);
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
        GTUBE,
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
    let sent = swaks(ports[2], "bob@sink.test", "all-dropped", GTUBE, &[]);
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
    let log = c.log();
    assert!(
        log.lines()
            .any(|l| l.contains("hang=timeout") && l.contains("action=\"tempfail\"")),
        "{log}"
    );

    // SIGTERM: each daemon stops cleanly and removes its socket.
    for (daemon, sock) in [(a, &a_sock), (b, &b_sock), (c, &c_sock)] {
        let (status, log) = daemon.stop();
        assert!(status.success(), "{status}: {log}");
        assert!(log.contains("stopped after"), "{log}");
        assert!(!sock.exists(), "{} is left behind", sock.display());
    }
    drop(pf);
}
