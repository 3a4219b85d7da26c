//! Components that do not implement the world are refused with a message
//! naming what is missing.

use crate::common::*;

fn wat_component(dir: &std::path::Path, fixture: &str) -> std::path::PathBuf {
    let src = root().join("tests/fixtures").join(fixture);
    let bytes = wat::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    let out = dir.join(fixture.replace(".wat", ".wasm"));
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn component_without_the_engine_export_is_refused_naming_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat_component(dir.path(), "no-exports.wat");
    let o = cordon(&["check-config", "--engine", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(wasm.to_str().unwrap()), "{err}");
    assert!(err.contains("exports no engine interface"), "{err}");
    assert!(err.contains("cordon:scanner/engine@0.2.0"), "{err}");
    assert!(err.contains("cordon:scanner/engine@0.1.0"), "{err}");
}

#[test]
fn component_with_a_foreign_import_is_refused_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat_component(dir.path(), "foreign-import.wat");
    let cache = dir.path().join("cache");
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.foreign]\ncomponent = {}\n",
            toml_path(&cache),
            toml_path(&wasm)
        ),
    );
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("imports evil:net/raw-socket@1.0.0, which cordon does not provide"),
        "{err}"
    );
    // What it may import instead.
    assert!(err.contains("cordon:scanner/host"), "{err}");
    assert!(err.contains("wasi:cli"), "{err}");
    // Refused before it was compiled: nothing went into the cache.
    let compiled: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(compiled.is_empty(), "{compiled:?}");
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A capability needs the operator's grant: without it the engine is
/// refused, naming the capability and the config key. Granted, it is
/// served (these fixtures go on to fail for what they lack: an engine
/// export; the `dns` and `store` tests load real engines granted them).
#[test]
fn a_component_importing_a_capability_needs_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, capability) in [("dns-import.wat", "dns"), ("store-import.wat", "store")] {
        let wasm = wat_component(dir.path(), fixture);
        let config = |grant: &str| {
            write_config(
                dir.path(),
                &format!(
                    "cache_dir = {}\nstore.path = {}\n[engines.probe]\ncomponent = {}\n{grant}",
                    toml_path(&cache_dir()),
                    toml_path(&dir.path().join("store.redb")),
                    toml_path(&wasm)
                ),
            )
        };
        let o = cordon(&["check-config", "--config", config("").to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(
            err.contains(&format!(
                "imports cordon:scanner/{capability}@0.2.0, the `{capability}` capability, \
                 which is not granted"
            )),
            "{err}"
        );
        assert!(err.contains("engines.probe.capabilities"), "{err}");

        let granted = config(&format!("capabilities = [\"{capability}\"]\n"));
        let o = cordon(&["check-config", "--config", granted.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2));
        let err = stderr(&o);
        assert!(!err.contains("is not granted"), "{err}");
        assert!(!err.contains("does not serve"), "{err}");
    }
}

#[test]
fn a_file_that_is_not_wasm_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("engine.wasm");
    std::fs::write(&bogus, b"MZ\x90\x00 this is not WebAssembly").unwrap();
    let o = cordon(&["check-config", "--engine", bogus.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(bogus.to_str().unwrap()), "{err}");
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
}

/// testsig as built against `cordon:scanner@0.1.0` (before 0.2.0 existed),
/// kept as a binary: engines built against an earlier contract keep
/// loading and scanning.
fn testsig_0_1() -> std::path::PathBuf {
    root().join("tests/fixtures/engines/testsig-0.1.0.wasm")
}

#[test]
fn an_engine_built_against_0_1_0_loads_and_scans() {
    let wasm = testsig_0_1();
    let bytes = std::fs::read(&wasm).unwrap();
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"cordon:scanner/engine@0.1.0") && !has(b"cordon:scanner/engine@0.2.0"));
    let engine = wasm.to_str().unwrap();
    let o = cordon(&["check-config", "--engine", engine]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("contract 0.1.0"), "{}", stdout(&o));

    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        engine,
        "samples/eicar.eml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("samples/eicar.eml: Eicar-Test-Signature FOUND"),
        "{}",
        stdout(&o)
    );
    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        engine,
        "samples/gtube.eml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("GTUBE FOUND"), "{}", stdout(&o));
    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        engine,
        "samples/clean.eml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("samples/clean.eml: OK"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn the_current_engines_are_built_against_0_2_0() {
    for name in ["testsig", "hostile"] {
        let o = cordon(&[
            "check-config",
            "--engine",
            component(name).to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(stdout(&o).contains("contract 0.2.0"), "{}", stdout(&o));
    }
}
