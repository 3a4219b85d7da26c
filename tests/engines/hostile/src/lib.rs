//! A deliberately misbehaving engine for cordon's containment tests.
//!
//! One component, many behaviours: the `mode` setting picks what `scan` does.
//!
//! | mode       | what `scan` does                                              |
//! |------------|---------------------------------------------------------------|
//! | `loop`     | spins forever                                                 |
//! | `memory`   | allocates and touches 1 MiB blocks until stopped              |
//! | `stack`    | recurses with small frames until wasmtime's native stack overflows |
//! | `shadow-stack` | recurses with large frames until Rust's shadow stack (in linear memory) runs out |
//! | `panic`    | panics                                                        |
//! | `oversized`| returns 100,000 rules of 1 KiB each                           |
//! | `escape`   | tries files, sockets, environment; reports what it reached    |
//! | `slow`     | busy-waits `slow_ms` milliseconds, then returns clean         |
//! | `bad-init` | (not a scan mode) `init` refuses its settings                 |
//! | `definitions` | `init` reads `/definitions/version.txt`, tries to write there and to climb out; `scan` tries to read it again |
//! | `sleep`    | sleeps 60 s through WASI                                      |
//! | `sleep-forever` | sleeps for a duration no `Instant` can hold              |
//! | `init-sleep` | (not a scan mode) `init` sleeps 600 s                       |
//! | `init-read` | (not a scan mode) `init` reads every file in `/definitions`  |
//! | `log-flood` | logs 1,000 lines of 64 KiB with line breaks and escapes      |
//! | `stdout-flood` | prints 16,384 one-byte lines to stdout                    |
//! | `forge`    | names a threat with line breaks, ESC and NUL in it            |
//! | `many-threats` | names 64 threats of 1,000 bytes each                      |
//! | `big-info` | `definitions_version` is 32 MiB                                |
//! | `part-rules` | each part's verdict has 300 rules of 1 KB: within the bounds alone, over them merged |

#[cfg(target_family = "wasm")]
mod component {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use cordon_engine_sdk::{
        Engine, Envelope, PartInfo, Settings, Threat, ThreatKind, Verdict, export_engine,
    };

    struct Hostile {
        mode: String,
        slow: Duration,
        definitions: String,
    }

    /// `init` in `definitions` mode: the version file must be readable and
    /// nothing else reachable. Returns the version, or what went wrong.
    fn probe_definitions() -> Result<String, String> {
        let version = std::fs::read_to_string("/definitions/version.txt")
            .map_err(|e| format!("cannot read /definitions/version.txt: {e}"))?;
        if std::fs::write("/definitions/written-by-engine", b"x").is_ok() {
            return Err("wrote into /definitions".into());
        }
        for outside in [
            "/definitions/../etc/passwd",
            "/etc/passwd",
            "/definitions/../../",
        ] {
            if std::fs::read(outside).is_ok() || std::fs::read_dir(outside).is_ok() {
                return Err(format!("reached {outside}"));
            }
        }
        Ok(version.trim().to_string())
    }

    /// Small frames, nothing address-taken: all on the native wasm stack.
    fn recurse_native(n: u64) -> u64 {
        if n == u64::MAX {
            return 0;
        }
        recurse_native(n + 1).wrapping_mul(3).wrapping_add(n)
    }

    /// Large frames kept in linear memory by `black_box`.
    fn recurse(n: u64, pad: [u8; 256]) -> u64 {
        let pad = black_box(pad);
        if black_box(n) == u64::MAX {
            return pad[0] as u64;
        }
        recurse(n + 1, pad).wrapping_add(pad[(n % 256) as usize] as u64)
    }

    /// Each probe returns `Some(what)` when it reached something it should
    /// not have.
    fn escape_probes() -> Vec<String> {
        let mut escaped = Vec::new();
        for path in ["/etc/passwd", "/", ".", "/proc/self/environ", "C:\\"] {
            if std::fs::read(path).is_ok() || std::fs::read_dir(path).is_ok() {
                escaped.push(format!("file:{path}"));
            }
        }
        if std::fs::write("/tmp/cordon-hostile", b"x").is_ok() {
            escaped.push("file-write:/tmp/cordon-hostile".into());
        }
        if std::env::vars().next().is_some() {
            escaped.push("env".into());
        }
        if std::env::args().next().is_some() {
            escaped.push("args".into());
        }
        for addr in ["127.0.0.1:25", "127.0.0.1:80", "[::1]:25", "10.0.0.1:80"] {
            if std::net::TcpStream::connect(addr).is_ok() {
                escaped.push(format!("tcp:{addr}"));
            }
        }
        if std::net::UdpSocket::bind("0.0.0.0:0").is_ok() {
            escaped.push("udp-bind".into());
        }
        use std::net::ToSocketAddrs;
        if ("localhost", 25).to_socket_addrs().is_ok() {
            escaped.push("dns".into());
        }
        escaped
    }

    impl Engine for Hostile {
        const NAME: &'static str = "hostile";
        const VENDOR: &'static str = "cordon tests";
        const VERSION: &'static str = "0";
        // Parts too, so that part verdicts can misbehave (`part-rules`);
        // every other mode answers parts clean.
        const WANTS_PARTS: bool = true;

        fn scan_part(&self, _envelope: &Envelope, part: &PartInfo, _content: &[u8]) -> Verdict {
            if self.mode != "part-rules" {
                return Verdict::clean();
            }
            // Each part's verdict is within the bounds (about 300 KB); ten
            // merged are not.
            Verdict {
                rules: (0..300)
                    .map(|i| format!("{}-{i}-{}", part.index, "r".repeat(990)))
                    .collect(),
                ..Verdict::clean()
            }
        }

        fn init(settings: &Settings) -> Result<Self, String> {
            let mode = settings.get("mode").cloned().unwrap_or_default();
            if mode == "bad-init" {
                return Err("setting `mode`: bad-init refuses to start".into());
            }
            let slow_ms = settings
                .get("slow_ms")
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|e| format!("setting `slow_ms`: {e}"))
                })
                .transpose()?
                .unwrap_or(100);
            let definitions = match mode.as_str() {
                "definitions" => probe_definitions()?,
                "init-sleep" => {
                    std::thread::sleep(Duration::from_secs(600));
                    String::new()
                }
                "init-read" => {
                    let mut n = 0usize;
                    for e in std::fs::read_dir("/definitions").map_err(|e| e.to_string())? {
                        let p = e.map_err(|e| e.to_string())?.path();
                        n += std::fs::read(&p)
                            .map_err(|e| format!("{}: {e}", p.display()))?
                            .len();
                    }
                    format!("{n} bytes")
                }
                _ => String::new(),
            };
            Ok(Hostile {
                mode,
                slow: Duration::from_millis(slow_ms),
                definitions,
            })
        }

        fn learn(
            &self,
            _envelope: &Envelope,
            message: &[u8],
            _class: cordon_engine_sdk::LearnClass,
            _reference: Option<&str>,
        ) -> Result<cordon_engine_sdk::LearnOutcome, String> {
            match self.mode.as_str() {
                "panic" => panic!("hostile engine panics on purpose"),
                "learn-refuses" => Err("hostile refuses to learn\u{1b}[2J".into()),
                "learn" => Ok(if message.is_empty() {
                    cordon_engine_sdk::LearnOutcome::AlreadyLearned
                } else {
                    cordon_engine_sdk::LearnOutcome::Learned
                }),
                _ => Ok(cordon_engine_sdk::LearnOutcome::Unsupported),
            }
        }

        fn definitions_version(&self) -> String {
            if matches!(self.mode.as_str(), "definitions" | "init-read") {
                return self.definitions.clone();
            }
            if self.mode == "big-info" {
                return "v\n".repeat(16 << 20);
            }
            format!("mode={}", self.mode)
        }

        fn scan(&self, envelope: &Envelope, message: &[u8]) -> Verdict {
            match self.mode.as_str() {
                // Reads the wall clock, computes for a while (by the
                // monotonic clock), reads it again.
                "clock" => {
                    let secs = || {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or(0)
                    };
                    let first = secs();
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_millis(1500) {
                        black_box(());
                    }
                    Verdict::detected(vec![Threat::new(
                        format!("Clock.{first}.{}", secs()),
                        ThreatKind::Policy,
                    )])
                }
                // Says what envelope it was given, in its threat's name.
                "envelope" => {
                    let to: Vec<&str> = envelope
                        .recipients
                        .iter()
                        .map(|r| r.address.as_str())
                        .collect();
                    Verdict::detected(vec![Threat::new(
                        format!("Envelope.from[{}].to[{}]", envelope.mail_from, to.join(",")),
                        ThreatKind::Policy,
                    )])
                }
                "loop" => {
                    let mut x = 0u64;
                    loop {
                        x = black_box(x.wrapping_add(message.len() as u64));
                    }
                }
                "memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        let mut block = vec![0u8; 1 << 20];
                        block.iter_mut().step_by(4096).for_each(|b| *b = 1);
                        hoard.push(black_box(block));
                    }
                }
                "stack" => {
                    let n = recurse_native(message.len() as u64);
                    Verdict {
                        rules: vec![n.to_string()],
                        ..Verdict::clean()
                    }
                }
                "shadow-stack" => {
                    let n = recurse(0, [1; 256]);
                    Verdict {
                        rules: vec![n.to_string()],
                        ..Verdict::clean()
                    }
                }
                "panic" => panic!("hostile engine panics on purpose"),
                "oversized" => Verdict {
                    rules: (0..100_000).map(|i| format!("{i:01024}")).collect(),
                    ..Verdict::clean()
                },
                "escape" => {
                    let escaped = escape_probes();
                    let threats = escaped
                        .into_iter()
                        .map(|what| Threat::new(format!("Escaped.{what}"), ThreatKind::Policy))
                        .collect();
                    let mut v = Verdict::detected(threats);
                    v.rules.push("probes-ran".into());
                    v
                }
                "slow" => {
                    let start = Instant::now();
                    while start.elapsed() < self.slow {
                        black_box(());
                    }
                    Verdict {
                        rules: vec!["slow-finished".into()],
                        ..Verdict::clean()
                    }
                }
                "definitions" => {
                    if std::fs::read("/definitions/version.txt").is_ok() {
                        return Verdict::detected(vec![Threat::new(
                            "Escaped.definitions-during-scan",
                            ThreatKind::Policy,
                        )]);
                    }
                    Verdict {
                        rules: vec!["definitions-closed".into()],
                        ..Verdict::clean()
                    }
                }
                "sleep" => {
                    std::thread::sleep(Duration::from_secs(60));
                    Verdict::clean()
                }
                "sleep-forever" => {
                    std::thread::sleep(Duration::MAX);
                    Verdict::clean()
                }
                "log-flood" => {
                    let line = "\x1b[31mforged\r\nlog line\n".repeat(64 * 1024 / 24);
                    for _ in 0..1000 {
                        cordon_engine_sdk::log(cordon_engine_sdk::Level::Warn, &line);
                    }
                    Verdict::clean()
                }
                "stdout-flood" => {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    for _ in 0..16_384 {
                        let _ = out.write_all(b"x\n");
                    }
                    let _ = out.flush();
                    Verdict::clean()
                }
                "forge" => Verdict::detected(vec![Threat::new(
                    "Evil\nsamples/clean.eml: OK\x1b[2J\0\r",
                    ThreatKind::Virus,
                )]),
                "many-threats" => Verdict::detected(
                    (0..64)
                        .map(|i| {
                            Threat::new(format!("{i:02}{}", "T".repeat(998)), ThreatKind::Virus)
                        })
                        .collect(),
                ),
                other => Verdict::detected(vec![Threat::new(
                    format!("Hostile.UnknownMode.{other}"),
                    ThreatKind::Policy,
                )]),
            }
        }
    }

    export_engine!(Hostile);
}
