//! A private Postfix instance and daemons to put beside it, shared by the
//! Postfix integration test and the milter benchmark (each includes this
//! file with `#[path]`).
//!
//! The instance lives in a directory of its own: its own config, queue,
//! mail log and Maildir sink (`*@sink.test`), smtpd on loopback ports of
//! the caller's choosing, each with its own `smtpd_milters`. Needs root.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Runs `cmd`, panics with its output if it fails, returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics, saying what to do, unless we are root and every tool is on PATH.
pub fn require(tools: &[&str]) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    assert!(root, "a private Postfix instance needs root");
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: `./dev test` and `./dev bench` install it (Debian)"
        );
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A world-traversable scratch directory under /tmp (Postfix's unprivileged
/// processes must reach the sink).
pub fn scratch(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("a scratch directory");
    run(Command::new("chmod").arg("755").arg(dir.path()));
    dir
}

/// A daemon process with its stderr collected line by line.
pub struct Daemon {
    /// The process.
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
    /// The thread reading stderr; it ends when the pipe does.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Daemon {
    /// Spawns `cmd` and waits until a stderr line contains `ready`.
    pub fn start(mut cmd: Command, ready: &'static str) -> Daemon {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(ready) {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(300)).is_err() {
            let _ = child.kill();
            panic!(
                "{what} did not get ready:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
        Daemon {
            child,
            log,
            reader: Some(reader),
        }
    }

    /// Spawns `cmd` and waits until `socket` accepts a connection.
    pub fn start_socket(mut cmd: Command, socket: &Path) -> Daemon {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(300);
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            assert!(
                child.try_wait().map(|s| s.is_none()).unwrap_or(false),
                "{what} exited before listening on {}",
                socket.display()
            );
            assert!(Instant::now() < deadline, "{what} never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child,
            log: Arc::default(),
            reader: None,
        }
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The first stderr line for which `wanted` holds, once it has been
    /// read from the pipe (up to 60 s), or a panic showing the log.
    pub fn wait_line(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| wanted(l)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no such log line after 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its peak resident memory, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        cordon::process::peak_rss_bytes(cordon::process::Pid::Other(self.child.id())).unwrap_or(0)
            / 1024
    }

    /// CPU time it has used so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let ticks = run(Command::new("getconf").arg("CLK_TCK"))
            .trim()
            .parse::<f64>()
            .unwrap_or(100.0);
        let used = cordon::process::cpu_ticks(cordon::process::Pid::Other(self.child.id()));
        used.unwrap_or(0) as f64 / ticks
    }

    /// SIGTERM, then its exit status and its whole log: the reader is
    /// joined, so the lines still in the pipe when the process exited are
    /// in it too.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        run(Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string()));
        let status = self.child.wait().expect("waiting for the daemon");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running private Postfix instance.
pub struct Postfix {
    /// Its directory.
    pub dir: PathBuf,
    /// Its config directory (for `postfix -c`, `postqueue -c`).
    pub etc: PathBuf,
}

impl Postfix {
    /// Writes the instance under `dir`, with one smtpd per (port, milter
    /// list; empty for none) and `extra` main.cf lines, and starts it.
    pub fn start(dir: &Path, services: &[(u16, String)], extra: &str) -> Postfix {
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
                 biff = no\n\
                 {extra}\n",
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
        for (port, milters) in services {
            run(postconf().arg("-M").arg(format!(
                "{port}/inet={port} inet n - n - - smtpd -o smtpd_milters={milters}"
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
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            pf.maillog()
        );
        pf
    }

    /// The mail log so far.
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.join("maillog")).unwrap_or_default()
    }

    /// Waits until the mail log has a line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str]) -> String {
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

    /// The messages in the sink that contain `marker`, once there are `n`.
    pub fn delivered(&self, marker: &str, n: usize) -> Vec<String> {
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
