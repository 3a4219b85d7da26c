//! Fuzzing on the stable toolchain: a seeded mutation loop per parser the
//! host runs on untrusted input (MIME decomposition, the milter session,
//! the config), each for a bounded time (`CORDON_FUZZ_SECS`, default 20 s
//! per target). A panic, an abort or a session task that dies fails the
//! test; the executions run are printed for the record.
//!
//! The mutator is structure-aware in the cheap way: besides bit flips,
//! inserts and splices, it inserts tokens that steer parsers into their
//! deep corners (boundaries, nested content types, encodings, packet
//! lengths). Seeds come from `samples/` and a few hand-made shapes; the
//! seed of the run is printed, so a failure can be replayed with
//! `CORDON_FUZZ_SEED`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cordon::config::Config;
use cordon::mime::{MimeLimits, decompose};

use crate::common::*;

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CORDON_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("fuzz seed: CORDON_FUZZ_SEED={seed}");
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn budget() -> Duration {
    let secs = std::env::var("CORDON_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(secs)
}

/// One mutation of `input`, using `tokens` for structure.
fn mutate(rng: &mut Rng, input: &[u8], tokens: &[&[u8]], seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let at = rng.below(out.len() + 1);
        match rng.below(8) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => out.insert(at, rng.next() as u8),
            2 if !out.is_empty() => {
                let end = (at + rng.below(64)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 | 4 => {
                let t = tokens[rng.below(tokens.len())];
                out.splice(at..at, t.iter().copied());
            }
            5 if !out.is_empty() => {
                // Repeat a chunk: nesting and floods.
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(128)).min(out.len());
                let chunk = out[start..end].to_vec();
                for _ in 0..1 + rng.below(64) {
                    out.splice(at..at, chunk.iter().copied());
                }
            }
            6 => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let end = (from + rng.below(512)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                let t = tokens[rng.below(tokens.len())];
                for _ in 0..rng.below(200) {
                    out.splice(at..at, t.iter().copied());
                }
            }
        }
    }
    out.truncate(4 << 20);
    out
}

const MIME_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"--b--\r\n",
    b"--b\r\n",
    b"Content-Type: multipart/mixed; boundary=\"b\"\r\n",
    b"Content-Type: multipart/mixed; boundary=\"\"\r\n",
    b"Content-Type: multipart/digest; boundary=b\r\n\r\n--b\r\n\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b"begin 644 a.bin\r\n",
    b"#0V%T\r\n`\r\nend\r\n",
    b"=?utf-8?b?w6k=?=",
    b"; name*0*=utf-8''%C3; name*1=x",
    b"boundary*0=\"",
    b"=\r\n",
    b"AAAA",
    b"\0",
    b"\xff\xfe",
];

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(root().join("samples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    seeds.push(b"Subject: x\r\n\r\n".to_vec());
    seeds.push(
        b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n\
Content-Type: multipart/alternative; boundary=\"c\"\r\n\r\n--c\r\nContent-Type: text/html\r\n\
Content-Transfer-Encoding: base64\r\n\r\nPGh0bWw+\r\n--c--\r\n--b--\r\nepilogue\r\n"
            .to_vec(),
    );
    seeds
}

#[test]
fn fuzz_mime_decomposition() {
    let mut rng = Rng::new();
    let seeds = seeds();
    let limits = MimeLimits::default();
    let started = Instant::now();
    let mut runs = 0u64;
    let mut current = seeds[0].clone();
    while started.elapsed() < budget() {
        let base = if rng.below(4) == 0 {
            &seeds[rng.below(seeds.len())]
        } else {
            &current
        };
        let input = mutate(&mut rng, base, MIME_TOKENS, &seeds);
        // On a thread with the stack decompose_bounded would give it.
        let len = input.len();
        let input = Arc::new(input);
        let data = input.clone();
        let lim = limits.clone();
        let d = std::thread::Builder::new()
            .stack_size(cordon::mime::stack_bytes_for(len))
            .spawn(move || decompose(&data, &lim))
            .unwrap()
            .join()
            .unwrap_or_else(|_| {
                let path = std::env::temp_dir().join("cordon-fuzz-mime.eml");
                std::fs::write(&path, &*input).unwrap();
                panic!("decompose panicked; input saved to {}", path.display())
            });
        assert!(d.parts.len() <= limits.max_parts as usize);
        let decoded: u64 = d.parts.iter().map(|p| p.content.len() as u64).sum();
        assert!(decoded <= limits.max_decoded_bytes);
        if rng.below(8) == 0 {
            current = Arc::try_unwrap(input).unwrap_or_else(|a| (*a).clone());
        }
        runs += 1;
    }
    eprintln!("fuzz_mime_decomposition: {runs} executions, 0 crashes");
    assert!(runs > 0);
}

#[test]
fn fuzz_config() {
    let mut rng = Rng::new();
    let seeds: Vec<Vec<u8>> = vec![
        std::fs::read(root().join("cordon.toml")).unwrap(),
        b"[engines.a]\ncomponent = \"a.wasm\"\nlimits.timeout_ms = 10\n[policy]\non_detect = { virus = \"reject\", default = \"tag\" }\n[policy.skip]\nclient_networks = [\"10.0.0.0/8\"]\n".to_vec(),
    ];
    let tokens: &[&[u8]] = &[
        b"\n",
        b"[engines.b]\ncomponent = \"b\"\n",
        b"= 4294967295\n",
        b"= -1\n",
        b"= nan\n",
        b"= \"\"\n",
        b"= []\n",
        b"= { }\n",
        b"max_depth",
        b"max_instances",
        b"listen = [\"inet:0@[::1]\"]\n",
        b"\"\xff\"",
        b"[[",
        b"]]",
    ];
    let started = Instant::now();
    let mut runs = 0u64;
    let path = Path::new("/nonexistent/fuzz.toml");
    while started.elapsed() < budget() {
        let base = &seeds[rng.below(seeds.len())];
        let input = mutate(&mut rng, base, tokens, &seeds);
        let text = String::from_utf8_lossy(&input);
        let r =
            std::panic::catch_unwind(|| Config::parse(&text, path).and_then(|c| c.validate(path)));
        match r {
            Ok(Ok(_)) => {}
            // Every error names the file.
            Ok(Err(e)) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
            Err(_) => panic!("config parsing panicked on:\n{text}"),
        }
        runs += 1;
    }
    eprintln!("fuzz_config: {runs} executions, 0 crashes");
    assert!(runs > 0);
}

/// Milter packets: length, command byte, payload.
fn packet(cmd: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = ((payload.len() + 1) as u32).to_be_bytes().to_vec();
    p.push(cmd);
    p.extend_from_slice(payload);
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn fuzz_milter_sessions() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = format!(
        "cache_dir = {}\nmilter.command_timeout_s = 1\n[engines.testsig]\ncomponent = {}\n",
        toml_path(&cache_dir()),
        toml_path(&component("testsig"))
    );
    let shared = Arc::new(registry_from_toml(&text));
    // A well-formed conversation to mutate.
    let mut optneg = 6u32.to_be_bytes().to_vec();
    optneg.extend_from_slice(&0x1ffu32.to_be_bytes());
    optneg.extend_from_slice(&0x1fffffu32.to_be_bytes());
    let mut convo = packet(b'O', &optneg);
    convo.extend(packet(b'D', b"Cj\0mx.test\0"));
    convo.extend(packet(b'C', b"client.test\x004\x00\x9c\x40192.0.2.1\0"));
    convo.extend(packet(b'H', b"client.test\0"));
    convo.extend(packet(b'M', b"<a@b.test>\0"));
    convo.extend(packet(b'R', b"<c@d.test>\0"));
    convo.extend(packet(b'T', b""));
    convo.extend(packet(b'L', b"Subject\0hello\0"));
    convo.extend(packet(b'N', b""));
    convo.extend(packet(b'B', format!("{}\r\n", eicar()).as_bytes()));
    convo.extend(packet(b'E', b""));
    convo.extend(packet(b'Q', b""));
    let seeds = vec![convo.clone()];
    let tokens: &[&[u8]] = &[
        &[0, 0, 0, 1, b'N'],
        &[0, 0, 0, 1, b'A'],
        &[0xff, 0xff, 0xff, 0xff],
        &[0, 1, 0, 0],
        &[0, 0, 0, 0],
        b"\0",
        &[0, 0, 0, 3, b'L', b'X', 0],
    ];
    let mut rng = Rng::new();
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < budget() {
        let input = mutate(&mut rng, &convo, tokens, &seeds);
        let (mut mta, milter) = tokio::io::duplex(1 << 16);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let session = tokio::spawn(cordon::milter::run_session(
            milter,
            "fuzz",
            shared.clone(),
            stop_rx,
        ));
        // Write what the mutated MTA says, read whatever comes back, then
        // hang up: the session must end (not hang, not panic).
        let _ = mta.write_all(&input).await;
        let _ = mta.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), mta.read_to_end(&mut sink)).await;
        drop(mta);
        match tokio::time::timeout(Duration::from_secs(10), session).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let path = std::env::temp_dir().join("cordon-fuzz-milter.bin");
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "milter session task died ({e}); input saved to {}",
                    path.display()
                );
            }
            Err(_) => panic!("milter session did not end 10 s after the MTA hung up"),
        }
        runs += 1;
    }
    eprintln!("fuzz_milter_sessions: {runs} executions, 0 crashes");
    assert!(runs > 0);
}

/// The clamav-testfiles of every container format clamsig opens; the
/// ISO, MSZIP cabinet and xz files are made by `containers::made_here`.
const CONTAINER_SEEDS: &[&str] = &[
    "clam.7z",
    "clam.arj",
    "clam.bin-be.cpio",
    "clam.bin-le.cpio",
    "clam.newc.cpio",
    "clam.odc.cpio",
    "clam.bz2.zip",
    "clam.d64.zip",
    "clam.impl.zip",
    "clam.zip",
    "clam.tar.gz",
    "clam.exe.bz2",
    "clam.cab",
    "clam.chm",
    "clam.sis",
    "clam.exe.binhex",
    "clam.exe.szdd",
    "clam.exe.html",
    "clam.exe.rtf",
    "clam.ole.doc",
    "clam.ppt",
    "clam.pdf",
    "clam.tnef",
    "clam.mail",
    "clam.exe.mbox.uu",
    "clam-upx.exe",
];

const CONTAINER_TOKENS: &[&[u8]] = &[
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\xff\xff\xff\x7f",
    b"\x00\x00",
    b"PK\x03\x04",
    b"MZ",
    b"PE\x00\x00",
    b"\\objdata ",
    b"stream\r\n",
    b"/Filter /FlateDecode",
    b"From: a\r\nSubject: b\r\n\r\n",
    b"begin 644 a\r\n",
];

/// Every new container parser of clamsig, inside the sandbox, on mutated
/// files: thousands per format (`CORDON_FUZZ_CONTAINER_CASES`, default
/// 2,000). Every outcome must be a verdict (clean, detected or
/// unscannable): no trap, no fault, no timeout; the slowest scan is
/// printed.
#[test]
fn fuzz_clamsig_containers_in_the_sandbox() {
    let cases: usize = std::env::var("CORDON_FUZZ_CONTAINER_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    let src = Path::new("/usr/share/clamav-testfiles");
    let exe = std::fs::read(src.join("clam.exe"))
        .unwrap_or_else(|e| panic!("clam.exe: {e} (./dev test installs clamav-testfiles)"));
    std::fs::write(
        defs.join("t.hdb"),
        format!("{}:544:ClamTest.Exe\n", crate::clamscan::md5_hex(&exe)),
    )
    .unwrap();
    std::fs::write(defs.join("t.ndb"), "Body.Test:0:*:4b45524e454c3332\n").unwrap();
    let registry = registry_from_toml(&format!(
        "cache_dir = {}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n",
        toml_path(&cache_dir()),
        toml_path(&component("clamsig")),
        toml_path(&defs)
    ));
    let engine = registry.enabled().remove(0);
    let mut seeds: Vec<(String, Vec<u8>)> = CONTAINER_SEEDS
        .iter()
        .map(|n| (n.to_string(), std::fs::read(src.join(n)).unwrap()))
        .collect();
    seeds.extend(crate::containers::made_here(&exe, dir.path()));
    let all: Vec<Vec<u8>> = seeds.iter().map(|(_, d)| d.clone()).collect();
    let envelope = cordon::bindings::empty_envelope();
    let raw = b"Subject: fuzz\r\n\r\nsee attached\r\n";
    let mut rng = Rng::new();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for (name, seed) in &seeds {
        for case in 0..cases {
            let input = mutate(&mut rng, seed, CONTAINER_TOKENS, &all);
            let parts = cordon::mime::Decomposed {
                parts: vec![cordon::mime::Part {
                    info: cordon::bindings::PartInfo {
                        index: 0,
                        depth: 1,
                        content_type: "application/octet-stream".into(),
                        file_name: Some(name.clone()),
                    },
                    content: input.clone().into(),
                }],
                exceeded: None,
            };
            let t = Instant::now();
            let outcome = engine.scan_with_parts_blocking(&envelope, raw, &parts);
            let took = t.elapsed();
            if took > slowest.0 {
                slowest = (took, format!("{name} case {case}"));
            }
            let label = match &outcome {
                cordon::engine::EngineOutcome::Verdict(v) => match &v.outcome {
                    cordon::bindings::Outcome::Clean => "clean".to_string(),
                    cordon::bindings::Outcome::Detected(_) => "detected".to_string(),
                    cordon::bindings::Outcome::Unscannable(r) => format!("unscannable:{r:?}"),
                },
                cordon::engine::EngineOutcome::Fault(f) => {
                    if failures.len() < 5 {
                        let path = dir
                            .path()
                            .join(format!("fault-{}-{case}.bin", failures.len()));
                        std::fs::write(&path, &input).unwrap();
                        let kept = std::env::temp_dir().join(path.file_name().unwrap());
                        let _ = std::fs::copy(&path, &kept);
                        failures.push(format!(
                            "{name} case {case}: {f:?} (input in {})",
                            kept.display()
                        ));
                    }
                    "fault".to_string()
                }
            };
            *outcomes.entry(label).or_default() += 1;
        }
    }
    eprintln!(
        "fuzz_clamsig_containers_in_the_sandbox: {} inputs, outcomes {outcomes:?}, slowest {:?} ({})",
        cases * seeds.len(),
        slowest.0,
        slowest.1
    );
    assert!(failures.is_empty(), "faults:\n{}", failures.join("\n"));
    // The mutants must reach the parsers: some still find clam.exe, some
    // are damaged past opening.
    assert!(outcomes.get("detected").copied().unwrap_or(0) > cases);
    assert!(outcomes.keys().any(|k| k.starts_with("unscannable")));
}
