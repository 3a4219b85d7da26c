//! Hostile mail, hostile clients and hostile engines from the red-team pass
//! (issue 9): each one is contained, and nothing passes unscanned.
//!
//! Mail is scanned by the real engines (clamsig with the sample
//! definitions, testsig) in this process, so a stack overflow in the host
//! would end the test binary: the deep-nesting tests fail loudly if the
//! host's stack is ever the limit again.

use std::io::Write as _;
use std::path::Path;

use cordon::bindings::{Outcome, UnscannableReason, Verdict};
use cordon::config::Config;
use cordon::engine::EngineResult;
use cordon::engine::{EngineOutcome, FaultKind};
use cordon::registry::Registry;
use cordon::scan::{Message, scan_message};

use crate::common::*;

/// clamsig (sample definitions) and testsig, plus `extra` config lines.
fn registry(extra: &str) -> Registry {
    let text = format!(
        "cache_dir = {cache}\n{extra}\n\
         [engines.testsig]\ncomponent = {testsig}\n\
         [engines.clamsig]\ncomponent = {clamsig}\ndefinitions = {defs}\nlimits.timeout_ms = 5000\n",
        cache = toml_path(&cache_dir()),
        testsig = toml_path(&component("testsig")),
        clamsig = toml_path(&component("clamsig")),
        defs = toml_path(&root().join("engines/clamsig/definitions")),
    );
    load(&text)
}

fn load(text: &str) -> Registry {
    registry_from_toml(text)
}

/// Scans `raw`; returns clamsig's result.
async fn clamsig_result(reg: &Registry, raw: Vec<u8>) -> EngineResult {
    let report = scan_message(
        &reg.enabled(),
        &Message::from_bytes(raw),
        &Default::default(),
    )
    .await;
    report
        .results
        .into_iter()
        .find(|r| &*r.engine == "clamsig")
        .expect("clamsig scanned")
}

fn verdict(r: &EngineResult) -> &Verdict {
    match &r.outcome {
        EngineOutcome::Verdict(v) => v,
        EngineOutcome::Fault(f) => panic!("{} faulted: {f:?}", r.engine),
    }
}

fn assert_detects_eicar(r: &EngineResult, case: &str) {
    match &verdict(r).outcome {
        Outcome::Detected(ts) => assert!(
            ts.iter().any(|t| t.name.contains("Eicar")),
            "{case}: found {ts:?}"
        ),
        other => panic!("{case}: clamsig says {other:?}, clamscan finds EICAR"),
    }
}

fn assert_unscannable(r: &EngineResult, want: UnscannableReason, case: &str) {
    match &verdict(r).outcome {
        Outcome::Unscannable(got) => assert_eq!(*got, want, "{case}"),
        other => panic!("{case}: clamsig says {other:?}, expected unscannable({want:?})"),
    }
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(A[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A message with `data` attached as `name`, base64.
fn attached(name: &str, data: &[u8]) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nSubject: attachment\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/octet-stream; name=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        b64(data)
    )
    .into_bytes()
}

fn eicar_bytes() -> &'static [u8] {
    eicar().as_bytes()
}

/// A zip local header + data for `name` (stored or deflated), with the
/// sizes given (a streamed member has flag 8 and sizes 0).
fn local_entry(name: &str, method: u16, flags: u16, csize: u32, data: &[u8]) -> Vec<u8> {
    let mut z = b"PK\x03\x04".to_vec();
    z.extend_from_slice(&20u16.to_le_bytes());
    z.extend_from_slice(&flags.to_le_bytes());
    z.extend_from_slice(&method.to_le_bytes());
    z.extend_from_slice(&[0; 4]); // time, date
    z.extend_from_slice(&[0; 4]); // crc (not checked)
    z.extend_from_slice(&csize.to_le_bytes());
    z.extend_from_slice(&csize.to_le_bytes());
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(data);
    z
}

/// A central directory with one entry and its end record.
fn central(name: &str, method: u16, csize: u32, local: u32, cd_at: u32) -> Vec<u8> {
    let mut c = b"PK\x01\x02".to_vec();
    c.extend_from_slice(&[20, 0, 20, 0]);
    c.extend_from_slice(&0u16.to_le_bytes());
    c.extend_from_slice(&method.to_le_bytes());
    c.extend_from_slice(&[0; 8]); // time, date, crc
    c.extend_from_slice(&csize.to_le_bytes());
    c.extend_from_slice(&csize.to_le_bytes());
    c.extend_from_slice(&(name.len() as u16).to_le_bytes());
    c.extend_from_slice(&[0; 12]); // extra, comment, disk, attrs
    c.extend_from_slice(&local.to_le_bytes());
    c.extend_from_slice(name.as_bytes());
    let cd_len = c.len() as u32;
    c.extend_from_slice(b"PK\x05\x06");
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&cd_len.to_le_bytes());
    c.extend_from_slice(&cd_at.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    c
}

fn deflate_raw(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gzip_member(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A ustar header for `name` with the size field written as given.
fn tar_header(name: &str, size_field: &[u8; 11]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[124..135].copy_from_slice(size_field);
    h[156] = b'0';
    h[257..262].copy_from_slice(b"ustar");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn nesting_100000_deep_of_every_kind_is_unscannable_not_a_crash() {
    let reg = registry("");
    let n = 100_000;
    let mut rfc822 = String::from("Subject: x\r\n");
    for _ in 0..n {
        rfc822.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    rfc822.push_str("Subject: leaf\r\n\r\nbody\r\n");

    let mut multipart = String::from("Subject: x\r\n");
    for i in 0..n {
        multipart.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\n"
        ));
    }
    multipart.push_str("Content-Type: text/plain\r\n\r\nbody\r\n");

    let mut digest = String::from("Subject: x\r\n");
    for i in 0..n {
        digest.push_str(&format!(
            "Content-Type: multipart/digest; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\n"
        ));
    }
    digest.push_str("Subject: leaf\r\n\r\nbody\r\n");

    // 40,000 levels inside a base64-encoded embedded message: mail-parser
    // parses the decoded message again and walks its tree recursively.
    let mut inner = String::from("Subject: inner\r\n");
    for _ in 0..40_000 {
        inner.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    inner.push_str("Subject: leaf\r\n\r\nbody\r\n");
    let encoded = format!(
        "Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"o\"\r\n\r\n\
         --o\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--o--\r\n",
        b64(inner.as_bytes())
    );

    for (case, raw) in [
        ("message/rfc822", rfc822),
        ("multipart/mixed", multipart),
        ("multipart/digest", digest),
        ("base64 message/rfc822", encoded),
    ] {
        let r = clamsig_result(&reg, raw.into_bytes()).await;
        assert_unscannable(&r, UnscannableReason::LimitsExceeded, case);
    }
}

#[test]
fn max_depth_has_a_ceiling_named_in_the_error() {
    let text = format!(
        "mime.max_depth = 6000\n[engines.a]\ncomponent = {}\n",
        toml_path(&component("testsig"))
    );
    let path = Path::new("ceiling.toml");
    let err = Config::parse(&text, path)
        .and_then(|c| c.validate(path))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mime.max_depth") && err.contains("1..=100"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn archives_clamscan_opens_are_opened_or_called_unscannable() {
    let reg = registry("");
    let e = eicar_bytes();

    // A central directory that says the member is 4 GiB.
    let local = local_entry("e.com", 0, 0, e.len() as u32, e);
    let mut lying = local.clone();
    lying.extend(central("e.com", 0, 0xFFFF_FFF0, 0, local.len() as u32));
    let r = clamsig_result(&reg, attached("lying.zip", &lying)).await;
    assert_detects_eicar(&r, "zip with a 4 GiB compressed size");

    // Two gzip members, EICAR in the second.
    let mut gz = gzip_member(b"first member, nothing here\n");
    gz.extend(gzip_member(e));
    let r = clamsig_result(&reg, attached("two.gz", &gz)).await;
    assert_detects_eicar(&r, "gzip with two members");

    // A streamed zip (data descriptors, no central directory), deflated:
    // its end is where the deflate stream ends, so it is opened.
    let packed = deflate_raw(e);
    let mut streamed = local_entry("e.com", 8, 8, 0, &packed);
    streamed.extend_from_slice(b"PK\x07\x08");
    streamed.extend_from_slice(&[0; 4]);
    streamed.extend_from_slice(&(packed.len() as u32).to_le_bytes());
    streamed.extend_from_slice(&(e.len() as u32).to_le_bytes());
    let r = clamsig_result(&reg, attached("streamed.zip", &streamed)).await;
    assert_detects_eicar(&r, "streamed deflated zip");

    // Streamed and stored: nothing says where the member ends (its bytes
    // are still scanned raw as part of the zip; here they are harmless).
    let mut stored = local_entry("x.txt", 0, 8, 0, b"harmless text");
    stored.extend_from_slice(&[0; 12]);
    let r = clamsig_result(&reg, attached("stored.zip", &stored)).await;
    assert_unscannable(&r, UnscannableReason::Corrupt, "streamed stored zip");

    // A directory entry whose member offset is past the end.
    let mut past = local_entry("x.txt", 0, 0, 5, b"hello");
    let at = past.len() as u32;
    past.extend(central("e.com", 0, 68, 0x00F0_0000, at));
    let r = clamsig_result(&reg, attached("past.zip", &past)).await;
    assert_unscannable(&r, UnscannableReason::Corrupt, "zip member past the end");
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_without_a_boundary_is_searched_like_text() {
    let reg = registry("");
    for ct in [
        "multipart/mixed",
        "multipart/mixed; boundary=\"\"",
        "multipart/mixed; boundary=",
    ] {
        let raw = format!(
            "From: a@example.org\r\nSubject: nb\r\nMIME-Version: 1.0\r\nContent-Type: {ct}\r\n\r\n\
             --foo\r\nContent-Type: application/octet-stream; name=\"e.com\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--foo--\r\n",
            b64(eicar_bytes())
        );
        let r = clamsig_result(&reg, raw.into_bytes()).await;
        assert_detects_eicar(&r, ct);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tar_size_that_wraps_32_bit_arithmetic_does_not_hold_the_engine() {
    let reg = registry("");
    // 2^32 - 512 on a directory entry (nothing extracted, so no member
    // limit ends the walk): in 32-bit arithmetic the next header would be
    // at 0 again, for ever.
    let mut tar = tar_header("dir/", b"37777777000");
    tar[156] = b'5';
    tar.extend(tar_header("e.com", b"00000000104"));
    tar.extend_from_slice(eicar_bytes());
    tar.resize(2048 + 512, 0);
    let r = clamsig_result(&reg, attached("wrap.tar", &tar)).await;
    // The engine finishes (no timeout) and scans what is there: the tar's
    // own bytes, where EICAR is stored.
    assert_detects_eicar(&r, "tar with a wrapping size");
}

#[test]
fn a_huge_mime_boundary_makes_the_message_unscannable_at_once() {
    let boundary = "-".repeat(100_000);
    let mut raw = format!(
        "Subject: b\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    );
    // Near-miss delimiters: each one matches all but the last byte.
    for _ in 0..20 {
        raw.push_str(&format!("--{}x\r\n", &boundary[..boundary.len() - 1]));
    }
    let d = cordon::mime::decompose(raw.as_bytes(), &Default::default());
    let why = d.exceeded.expect("refused");
    assert!(why.contains("MIME boundary longer than 256"), "{why}");

    let continued = "Subject: b\r\nContent-Type: multipart/mixed; boundary*0=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; boundary*1=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\r\n\r\nx\r\n";
    let d = cordon::mime::decompose(continued.as_bytes(), &Default::default());
    assert!(d.exceeded.is_some(), "RFC 2231 pieces add up");

    // A boundary folded over many lines adds up.
    let mut folded = String::from("Subject: f\r\nContent-Type: multipart/mixed; boundary=\"");
    for _ in 0..50 {
        folded.push_str("abcdefghij\r\n ");
    }
    folded.push_str("\"\r\n\r\nx\r\n");
    let d = cordon::mime::decompose(folded.as_bytes(), &Default::default());
    assert!(d.exceeded.is_some(), "folded pieces add up");

    // `boundary=` outside a Content-Type header (a long URL in a text
    // body) is not a boundary.
    let url = format!(
        "Subject: u\r\nContent-Type: text/plain\r\n\r\nsee https://example.org/x?boundary={}\r\n",
        "a".repeat(1000)
    );
    let d = cordon::mime::decompose(url.as_bytes(), &Default::default());
    assert_eq!(d.exceeded, None);

    // An ordinary boundary is untouched.
    let ok = "Subject: b\r\nContent-Type: multipart/mixed; boundary=\"----=_Part_1234_5678.1700000000000\"\r\n\r\n------=_Part_1234_5678.1700000000000\r\nContent-Type: text/plain\r\n\r\nhi\r\n------=_Part_1234_5678.1700000000000--\r\n";
    let d = cordon::mime::decompose(ok.as_bytes(), &Default::default());
    assert_eq!(d.exceeded, None);
    assert_eq!(&*d.parts[0].content, b"hi");
}

#[tokio::test(flavor = "multi_thread")]
async fn decomposition_past_its_time_bound_is_unscannable() {
    // A bound of 1 ms cannot hold a 20 MiB message: the scan goes on, and
    // engines that wanted parts say unscannable.
    let reg = registry("mime.max_decode_ms = 1");
    let mut raw = b"Subject: big\r\nContent-Type: text/plain\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b"lorem ipsum dolor sit amet\r\n", 800_000).flatten());
    let report = scan_message(
        &reg.enabled(),
        &Message::from_bytes(raw),
        &cordon::mime::MimeLimits {
            max_decode_ms: 1,
            ..Default::default()
        },
    )
    .await;
    let r = report
        .results
        .iter()
        .find(|r| &*r.engine == "clamsig")
        .unwrap();
    assert_unscannable(r, UnscannableReason::LimitsExceeded, "1 ms decode bound");
}

/// testsig beside the hostile engine in `mode`.
fn with_hostile(mode: &str, limits: &str) -> Registry {
    load(&format!(
        "cache_dir = {cache}\n\
         [engines.testsig]\ncomponent = {testsig}\n\
         [engines.hostile]\ncomponent = {hostile}\nsettings.mode = \"{mode}\"\n{limits}\n",
        cache = toml_path(&cache_dir()),
        testsig = toml_path(&component("testsig")),
        hostile = toml_path(&component("hostile")),
    ))
}

async fn scan_eicar(reg: &Registry) -> Vec<EngineResult> {
    let report = scan_message(
        &reg.enabled(),
        &Message::from_bytes(message("e", eicar())),
        &Default::default(),
    )
    .await;
    let t = report
        .results
        .iter()
        .find(|r| &*r.engine == "testsig")
        .unwrap();
    assert!(
        matches!(&verdict(t).outcome, Outcome::Detected(_)),
        "testsig beside the hostile engine still detects EICAR"
    );
    report.results
}

fn hostile_fault(results: &[EngineResult]) -> (FaultKind, String) {
    let h = results.iter().find(|r| &*r.engine == "hostile").unwrap();
    match &h.outcome {
        EngineOutcome::Fault(f) => (f.kind, f.detail.clone()),
        other => panic!("hostile returned {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sleeping_through_wasi_ends_at_the_deadline() {
    for mode in ["sleep", "sleep-forever"] {
        let reg = with_hostile(mode, "limits.timeout_ms = 1000");
        // Twice: the second scan shows the engine's slot came back. The
        // engine asks for 60 s (or forever); a bound of half that tells a
        // deadline that covers the sleep from one that waits it out.
        for _ in 0..2 {
            let results =
                tokio::time::timeout(std::time::Duration::from_secs(30), scan_eicar(&reg))
                    .await
                    .unwrap_or_else(|_| panic!("{mode}: the scan waited out the sleep"));
            let (kind, detail) = hostile_fault(&results);
            assert_eq!(kind, FaultKind::Timeout, "{mode}: {detail}");
        }
    }
}

#[test]
fn init_that_sleeps_is_refused_at_init_timeout() {
    let text = format!(
        "cache_dir = {}\n[engines.hostile]\ncomponent = {}\nsettings.mode = \"init-sleep\"\nlimits.init_timeout_ms = 1000\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
    );
    let err = registry_load_error(&text);
    assert!(
        err.contains("hostile") && (err.contains("timeout") || err.contains("init_timeout_ms")),
        "{err}"
    );
}

#[test]
fn definitions_with_a_fifo_are_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), b"x").unwrap();
    let fifo = dir.path().join("stall.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let text = format!(
        "cache_dir = {}\n[engines.hostile]\ncomponent = {}\ndefinitions = {}\nsettings.mode = \"init-read\"\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
        toml_path(dir.path()),
    );
    let err = registry_load_error(&text);
    assert!(err.contains("stall.fifo"), "{err}");
}

#[test]
fn a_component_that_is_not_a_regular_file_or_too_big_is_refused() {
    let o = cordon(&["check-config", "--engine", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/zero") && stderr(&o).contains("not a regular file"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.wasm");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(3 << 20).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.big]\ncomponent = {}\nlimits.max_component_mib = 2\n",
            toml_path(&cache_dir()),
            toml_path(&big)
        ),
    );
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("max_component_mib"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_engine_log_lines_is_capped_and_escaped() {
    for mode in ["log-flood", "stdout-flood"] {
        let o = scan_with_hostile_cli(mode, "info");
        let err = stderr(&o);
        let lines = err.lines().filter(|l| l.contains("engine=hostile")).count();
        assert!(
            (100..=110).contains(&lines),
            "{mode}: {lines} log lines for one scan"
        );
        assert!(err.contains("exceeded 100 log lines"), "{mode}");
        assert!(!err.contains('\u{1b}'), "{mode}: ESC reached the log");
        assert!(
            err.lines().all(|l| l.len() < 4096),
            "{mode}: a log line is not bounded"
        );
        assert_eq!(stdout(&o).lines().count(), 1, "{mode}: {}", stdout(&o));
    }
}

#[test]
fn engine_text_cannot_forge_scan_output_lines() {
    let o = scan_with_hostile_cli("forge", "warn");
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 1, "{out:?}");
    assert!(
        !out.bytes().any(|b| b == 0x1b || b == 0 || b == b'\r'),
        "{out:?}"
    );
    assert!(
        out.contains("Evil\\nsamples/clean.eml: OK\\x1b[2J"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_and_headers_stay_within_their_line_limits() {
    let reg = with_hostile("many-threats", "");
    let results = scan_eicar(&reg).await;
    let policy = cordon::policy::Policy::default();
    let envelope = cordon::bindings::empty_envelope();
    let d = cordon::policy::decide(
        &policy,
        &results,
        &[],
        cordon::policy::Context {
            envelope: &envelope,
            header_names: &[],
            scan_id: "0123456789abcdef",
            host: None,
        },
    );
    let reply = d.reply.expect("rejected");
    let line = format!("{} {} {}\r\n", reply.code, reply.status, reply.text);
    assert!(line.len() <= 512, "{} bytes: {line}", line.len());
    assert!(reply.text.contains("more)"), "{}", reply.text);

    // Tagged instead: the header lines.
    let tag = load(&format!(
        "cache_dir = {cache}\n[policy]\non_detect = \"tag\"\n\
         [engines.hostile]\ncomponent = {hostile}\nsettings.mode = \"many-threats\"\n",
        cache = toml_path(&cache_dir()),
        hostile = toml_path(&component("hostile")),
    ));
    let report = scan_message(
        &tag.enabled(),
        &Message::from_bytes(message("t", "x")),
        &Default::default(),
    )
    .await;
    let path = Path::new("tag.toml");
    let cfg = Config::parse(
        "[policy]\non_detect = \"tag\"\n[engines.hostile]\ncomponent = \"x.wasm\"\n",
        path,
    )
    .unwrap()
    .validate(path)
    .unwrap();
    let d = cordon::policy::decide(
        &cfg.registry.live.rules.policy,
        &report.results,
        &[],
        cordon::policy::Context {
            envelope: &envelope,
            header_names: &[],
            scan_id: "0123456789abcdef",
            host: None,
        },
    );
    assert!(!d.add_headers.is_empty());
    for (name, value) in &d.add_headers {
        let l = name.len() + 2 + value.len();
        assert!(l <= 998, "{name}: {l} bytes");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn info_strings_are_bounded_or_the_load_is_refused() {
    let text = format!(
        "cache_dir = {}\n[engines.hostile]\ncomponent = {}\nsettings.mode = \"big-info\"\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
    );
    match Registry::load(&config_from_toml(&text).registry) {
        Ok(reg) => {
            let g = reg.enabled()[0].clone();
            assert!(g.info.definitions_version.len() < 1024);
            assert!(!g.info.definitions_version.contains('\n'));
        }
        Err(e) => {
            let e = format!("{e:#}");
            assert!(e.len() < 8192, "error of {} bytes", e.len());
            assert!(e.contains("max_verdict_bytes"), "{e}");
        }
    }
}

#[test]
fn a_compile_past_its_bound_is_refused_and_the_child_is_gone() {
    // `cordon check-config` on testsig with `limit`, in a fresh cache:
    // nothing compiled yet, so the compile is what meets the bound.
    let dir = tempfile::tempdir().unwrap();
    let refused = |limit: &str, cache: &str| {
        let cfg = write_config(
            dir.path(),
            &format!(
                "cache_dir = {}\n[engines.testsig]\ncomponent = {}\nlimits.{limit}\n",
                toml_path(&dir.path().join(cache)),
                toml_path(&component("testsig"))
            ),
        );
        let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{limit}: {}", stderr(&o));
        stderr(&o)
    };
    // 1 ms is less than any compile takes.
    let err = refused("compile_timeout_ms = 1", "cache");
    assert!(
        err.contains("compile_timeout_ms") && err.contains("testsig.wasm"),
        "{err}"
    );
    // Nothing half-written is left in the cache (its empty directories
    // may stay).
    let mut leftovers = Vec::new();
    let mut dirs = vec![dir.path().join("cache")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                leftovers.push(e.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // 16 MiB of address space is too little for any compile.
    let err = refused("compile_memory_mib = 16", "cache2");
    assert!(err.contains("compile_memory_mib"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn part_verdicts_are_refused_as_soon_as_their_merge_is_over_the_bounds() {
    let reg = with_hostile("part-rules", "limits.max_rules = 10000");
    let mut raw = String::from(
        "Subject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"p\"\r\n\r\n",
    );
    for i in 0..20 {
        raw.push_str(&format!(
            "--p\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n"
        ));
    }
    raw.push_str("--p--\r\n");
    let report = scan_message(
        &reg.enabled(),
        &Message::from_bytes(raw.into_bytes()),
        &Default::default(),
    )
    .await;
    let (kind, detail) = hostile_fault(&report.results);
    assert_eq!(kind, FaultKind::BadOutput, "{detail}");
    // Refused at the merge that crossed the bound, not after all twenty.
    assert!(
        detail.contains("merged up to part") && detail.contains("max_verdict_bytes"),
        "{detail}"
    );
    let part: u32 = detail
        .split("merged up to part ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("the part is named");
    assert!(part < 10, "merged up to part {part}");
}
