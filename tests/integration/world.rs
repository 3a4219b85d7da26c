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
    assert!(err.contains("does not implement the world"), "{err}");
    assert!(err.contains("cordon:scanner/engine@0.1.0"), "{err}");
}

#[test]
fn component_with_a_foreign_import_is_refused_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = wat_component(dir.path(), "foreign-import.wat");
    let o = cordon(&["check-config", "--engine", wasm.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("evil:net/raw-socket@1.0.0"), "{err}");
    assert!(
        err.contains("imports something cordon does not provide"),
        "{err}"
    );
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
