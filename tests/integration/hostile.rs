//! Hostile engines: each misbehaviour is stopped or contained, reported by
//! kind, and leaves the host up and the other engine's verdicts unchanged.
//!
//! Every test loads the reference engine `testsig` beside one hostile
//! engine, scans a message carrying EICAR, and checks both outcomes; then
//! scans again, to show the next scan runs on a fresh instance.

use std::path::Path;
use std::time::Duration;

use cordon::bindings::Outcome;
use cordon::config::Config;
use cordon::engine::EngineResult;
use cordon::engine::{EngineOutcome, FaultKind};
use cordon::registry::Registry;
use cordon::scan::{Message, scan_message};

use crate::common::*;

/// testsig plus the hostile engine in `mode`, with extra `limits` lines.
fn registry(mode: &str, limits: &str) -> Registry {
    let text = format!(
        "cache_dir = {cache}\n\
         [engines.testsig]\ncomponent = {testsig}\n\
         [engines.hostile]\ncomponent = {hostile}\nsettings.mode = \"{mode}\"\n{limits}\n",
        cache = toml_path(&cache_dir()),
        testsig = toml_path(&component("testsig")),
        hostile = toml_path(&component("hostile")),
    );
    registry_from_toml(&text)
}

/// Scans a message with EICAR twice; returns (testsig, hostile) results of
/// each scan after checking that testsig detected EICAR both times.
async fn scan_twice(reg: &Registry) -> Vec<EngineResult> {
    let engines = reg.enabled();
    let mut hostile = Vec::new();
    for round in 0..2 {
        let msg = Message::from_bytes(message("hostile", eicar()));
        let report = scan_message(&engines, &msg, &Default::default()).await;
        assert_eq!(report.results.len(), 2);
        let (h, t) = (&report.results[0], &report.results[1]);
        assert_eq!(&*t.engine, "testsig");
        match &t.outcome {
            EngineOutcome::Verdict(v) => match &v.outcome {
                Outcome::Detected(threats) => {
                    assert_eq!(threats[0].name, "Eicar-Test-Signature", "round {round}")
                }
                other => panic!("round {round}: testsig saw {other:?}"),
            },
            other => panic!("round {round}: testsig faulted: {other:?}"),
        }
        hostile.push(h.clone());
    }
    hostile
}

fn fault_of(r: &EngineResult) -> (FaultKind, String) {
    match &r.outcome {
        EngineOutcome::Fault(f) => (f.kind, f.detail.clone()),
        other => panic!("{} returned {other:?}, expected a fault", r.engine),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn infinite_loop_ends_as_timeout_within_twice_the_timeout() {
    let reg = registry("loop", "limits.timeout_ms = 1000");
    for r in scan_twice(&reg).await {
        let (kind, _) = fault_of(&r);
        assert_eq!(kind, FaultKind::Timeout);
        // Generous bound from the issue: twice the timeout. The precise stop
        // latency is measured by `cargo bench`.
        assert!(
            r.timing.run < Duration::from_millis(2000),
            "loop stopped after {:?}",
            r.timing.run
        );
    }
}

/// Loads `mode` with `limits`, scans twice, and checks that both scans end
/// in a fault of `kind` whose detail contains `detail`.
async fn expect_fault(mode: &str, limits: &str, kind: FaultKind, detail: &str) {
    let reg = registry(mode, limits);
    for r in scan_twice(&reg).await {
        let (got_kind, got_detail) = fault_of(&r);
        assert_eq!(got_kind, kind, "{mode}: {got_detail}");
        assert!(got_detail.contains(detail), "{mode}: {got_detail}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_ends_as_out_of_memory() {
    expect_fault(
        "memory",
        "limits.memory_mib = 64",
        FaultKind::OutOfMemory,
        "refused",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stack_overflow_is_a_trap_named_stack_overflow() {
    expect_fault("stack", "", FaultKind::Trap, "stack overflow").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_stack_overflow_is_a_trap() {
    // Rust keeps address-taken locals on a stack in linear memory; running
    // off its end is an out-of-bounds access, not wasmtime's stack guard.
    expect_fault(
        "shadow-stack",
        "",
        FaultKind::Trap,
        "out of bounds memory access",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_is_a_trap() {
    expect_fault("panic", "", FaultKind::Trap, "unreachable").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_verdict_is_bad_output() {
    // 100,000 rules of 1 KiB: the guest needs ~110 MiB to build them, so it
    // gets room; the host refuses to lift more than the verdict's bound.
    expect_fault(
        "oversized",
        "limits.memory_mib = 200",
        FaultKind::BadOutput,
        "more data in one call than max_verdict_bytes allows",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn escape_attempts_reach_nothing() {
    let reg = registry("escape", "");
    for r in scan_twice(&reg).await {
        let EngineOutcome::Verdict(v) = &r.outcome else {
            panic!("escape engine faulted: {:?}", r.outcome);
        };
        // The engine reports each file, socket, variable or name it reached
        // as a threat; the rule proves its probes ran to the end.
        assert!(
            matches!(v.outcome, Outcome::Clean),
            "the engine escaped: {:?}",
            v.outcome
        );
        assert_eq!(v.rules, ["probes-ran"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_engine_within_its_timeout_finishes() {
    let reg = registry(
        "slow",
        "settings.slow_ms = \"300\"\nlimits.timeout_ms = 10000",
    );
    for r in scan_twice(&reg).await {
        let EngineOutcome::Verdict(v) = &r.outcome else {
            panic!("slow engine faulted: {:?}", r.outcome);
        };
        assert_eq!(v.rules, ["slow-finished"]);
    }
}

#[test]
fn engine_refusing_its_settings_fails_to_load_with_its_reason() {
    let text = format!(
        "cache_dir = {}\n[engines.bad]\ncomponent = {}\nsettings.mode = \"bad-init\"\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
    );
    let err = registry_load_error(&text);
    assert!(err.contains("engine bad"), "{err}");
    assert!(err.contains("hostile.wasm"), "{err}");
    assert!(err.contains("bad-init refuses to start"), "{err}");
}

/// The memory bomb at full concurrency, through the real binary: every scan
/// ends out-of-memory and the process's peak resident memory stays under
/// the limit times the concurrency plus what the host needs without it.
#[test]
fn memory_bomb_at_full_concurrency_keeps_host_memory_bounded() {
    const LIMIT_MIB: u64 = 64;
    const CONCURRENCY: u64 = 4;
    let dir = tempfile::tempdir().unwrap();
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    for i in 0..(CONCURRENCY * 3) {
        std::fs::write(mail.join(format!("{i}.eml")), message("m", "hello")).unwrap();
    }
    let run = |engines: &str| -> serde_json::Value {
        let cfg = write_config(
            dir.path(),
            &format!("cache_dir = {}\n{engines}", toml_path(&cache_dir())),
        );
        let o = cordon(&[
            "scan",
            "--json",
            "--jobs",
            &CONCURRENCY.to_string(),
            "--config",
            cfg.to_str().unwrap(),
            mail.to_str().unwrap(),
        ]);
        let lines: Vec<serde_json::Value> = stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len() as u64, CONCURRENCY * 3 + 1, "{}", stderr(&o));
        lines.into_iter().last().unwrap()
    };
    let testsig = format!(
        "[engines.testsig]\ncomponent = {}\nlimits.max_concurrency = {CONCURRENCY}\n",
        toml_path(&component("testsig"))
    );
    let baseline = run(&testsig);
    assert_eq!(baseline["errors"], 0);
    let bomb = run(&format!(
        "{testsig}[engines.bomb]\ncomponent = {}\nsettings.mode = \"memory\"\n\
         limits.memory_mib = {LIMIT_MIB}\nlimits.max_concurrency = {CONCURRENCY}\n",
        toml_path(&component("hostile"))
    ));
    // Every message is deferred (the bomb never gives a verdict) ...
    assert_eq!(bomb["errors"], CONCURRENCY * 3);
    // ... and memory stays bounded.
    let base_kib = baseline["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    let peak_kib = bomb["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    let margin_kib = 64 * 1024;
    let bound_kib = LIMIT_MIB * 1024 * CONCURRENCY + base_kib + margin_kib;
    assert!(
        peak_kib < bound_kib,
        "peak {peak_kib} KiB >= bound {bound_kib} KiB (baseline {base_kib} KiB)"
    );
}

/// With the pool smaller than the work, scans wait for a slot instead of
/// failing: sixteen concurrent scans of two engines through a one-instance
/// pool all get verdicts, none `overloaded`.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_pool_queues_instead_of_failing() {
    let text = format!(
        "cache_dir = {cache}\n[pool]\nmax_instances = 1\n\
         [engines.testsig]\ncomponent = {testsig}\nlimits.max_concurrency = 8\n\
         [engines.slow]\ncomponent = {hostile}\nsettings.mode = \"slow\"\nsettings.slow_ms = \"20\"\n\
         limits.max_concurrency = 8\n",
        cache = toml_path(&cache_dir()),
        testsig = toml_path(&component("testsig")),
        hostile = toml_path(&component("hostile")),
    );
    assert_eq!(config_from_toml(&text).registry.pool_instances, 1);
    let reg = registry_from_toml(&text);
    let engines = reg.enabled();
    let scans = (0..16).map(|_| {
        let engines = engines.clone();
        tokio::spawn(async move {
            scan_message(
                &engines,
                &Message::from_bytes(message("p", eicar())),
                &Default::default(),
            )
            .await
        })
    });
    for report in futures_util::future::join_all(scans).await {
        for r in report.unwrap().results {
            assert!(
                matches!(r.outcome, EngineOutcome::Verdict(_)),
                "{}: {:?}",
                r.engine,
                r.outcome
            );
        }
    }
}

/// An engine's definitions directory is readable during `init`, read-only,
/// and not a way out; during scans it is not there at all: the engine's
/// snapshotted handle to it names nothing in the scan's store, so touching
/// it is a fault, not a read.
#[tokio::test(flavor = "multi_thread")]
async fn definitions_are_read_only_at_init_and_closed_during_scans() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(defs.join("version.txt"), "2026-11-22.7\n").unwrap();
    let text = format!(
        "cache_dir = {}\n[engines.defs]\ncomponent = {}\ndefinitions = {}\nsettings.mode = \"definitions\"\n",
        toml_path(&cache_dir()),
        toml_path(&component("hostile")),
        toml_path(&defs),
    );
    let reg = registry_from_toml(&text);
    let g = &reg.enabled()[0];
    assert_eq!(g.info.definitions_version, "2026-11-22.7");
    assert!(!defs.join("written-by-engine").exists());
    let report = scan_message(
        &reg.enabled(),
        &Message::from_bytes(message("d", "x")),
        &Default::default(),
    )
    .await;
    let (kind, detail) = fault_of(&report.results[0]);
    assert_eq!(kind, FaultKind::Trap, "{detail}");

    // A missing definitions directory is a config error naming the key.
    let text = text.replace(&toml_path(&defs), &toml_path(&dir.path().join("nope")));
    let path = Path::new("defs-test.toml");
    let err = Config::parse(&text, path)
        .unwrap()
        .validate(path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("engines.defs.definitions"), "{err}");
    assert!(err.contains("nope is not a directory"), "{err}");
}

/// The wall clock an engine reads is the start of its call, fixed for the
/// call (the contract, 0.2.0): two readings 1.5 s of computing apart agree,
/// and they are the time the scan ran.
#[test]
fn the_wall_clock_is_the_call_start_fixed_for_the_call() {
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = now();
    let o = scan_with_hostile_cli("clock", "warn");
    let after = now();
    let out = stdout(&o);
    let name = out
        .split_whitespace()
        .find_map(|w| w.trim_end_matches(',').strip_prefix("Clock."))
        .unwrap_or_else(|| panic!("no clock reading: {out} {}", stderr(&o)));
    let (first, second) = name.split_once('.').unwrap();
    let (first, second): (u64, u64) = (first.parse().unwrap(), second.parse().unwrap());
    assert_eq!(first, second, "the clock moved during the call: {out}");
    assert!(
        (before..=after).contains(&first),
        "{before} <= {first} <= {after}"
    );
}
