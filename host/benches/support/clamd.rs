//! A private clamd for the benchmarks that compare against it: started on
//! a database directory with its own socket, log and temporary directory,
//! spoken to over its unix socket (`INSTREAM`, `RELOAD`, `PING`), killed
//! when dropped. Included by the benchmarks with `#[path]`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running clamd.
pub struct Clamd {
    child: Child,
    /// Its socket.
    pub sock: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    tmp: PathBuf,
}

impl Clamd {
    /// Starts clamd on the database in `db`, with files named after `name`
    /// in `work` and at most `max_threads` scanning threads; returns once
    /// it answers `PING`.
    pub fn start(name: &str, db: &Path, work: &Path, max_threads: usize) -> Self {
        let sock = work.join(format!("clamd-{name}.sock"));
        let log = work.join(format!("clamd-{name}.log"));
        let tmp =
            Path::new("/dev/shm").join(format!("cordon-bench-clamd-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let conf = work.join(format!("clamd-{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "LocalSocket {}\nDatabaseDirectory {}\nTemporaryDirectory {}\nForeground yes\n\
                 StreamMaxLength 100M\nLogFile {}\nSelfCheck 0\nMaxThreads {max_threads}\n",
                sock.display(),
                db.display(),
                tmp.display(),
                log.display()
            ),
        )
        .unwrap();
        let mut child = Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd: run ./dev bench, which installs clamav-daemon");
        let started = Instant::now();
        while !ping(&sock) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "clamd exited: see {}",
                log.display()
            );
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "clamd did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Clamd {
            child,
            sock,
            log,
            tmp,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether its log says `line`.
    pub fn logged(&self, line: &str) -> bool {
        self.logged_times(line) > 0
    }

    /// How many times its log holds `line`.
    pub fn logged_times(&self, line: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(line)
            .count()
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// Sends one command (`zRELOAD\0`, ...) and returns the whole answer.
pub fn request(sock: &Path, cmd: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(cmd).unwrap();
    let mut r = String::new();
    let _ = s.read_to_string(&mut r);
    r
}

/// Scans `data` with `INSTREAM`; panics unless clamd answers for the stream.
pub fn scan(sock: &Path, data: &[u8]) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.write_all(b"zINSTREAM\0").unwrap();
    for chunk in data.chunks(65536) {
        s.write_all(&(chunk.len() as u32).to_be_bytes()).unwrap();
        s.write_all(chunk).unwrap();
    }
    s.write_all(&0u32.to_be_bytes()).unwrap();
    let mut r = Vec::new();
    s.read_to_end(&mut r).unwrap();
    assert!(r.starts_with(b"stream: "), "clamd said {r:?}");
}

/// Whether clamd answers `PING`.
pub fn ping(sock: &Path) -> bool {
    UnixStream::connect(sock).is_ok_and(|mut s| {
        s.write_all(b"zPING\0").is_ok() && {
            let mut r = [0u8; 4];
            s.read_exact(&mut r).is_ok() && &r == b"PONG"
        }
    })
}
