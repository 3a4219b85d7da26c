//! Paths to built components and helpers shared by the test modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// A built component, or a panic that says how to build it.
pub fn component(name: &str) -> PathBuf {
    let p = root()
        .join("target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "component {} is missing: run `./dev build` (or `./dev test`) first",
        p.display()
    );
    p
}

/// One compiled-component cache for all tests, so each component compiles once.
pub fn cache_dir() -> PathBuf {
    root().join("target/cordon-test-cache")
}

/// Runs the `cordon` binary with `args` in the repository root.
pub fn cordon(args: &[&str]) -> Output {
    cordon_in(&root(), args)
}

/// Runs the `cordon` binary with `args` in `dir`.
pub fn cordon_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(args)
        .current_dir(dir)
        .env_remove("CORDON_CONFIG")
        .env("CORDON_LOG", "warn")
        .output()
        .expect("running cordon")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a config file into `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("cordon.toml");
    std::fs::write(&p, text).expect("writing config");
    p
}

/// A TOML string literal for a path.
pub fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The EICAR string.
pub fn eicar() -> &'static str {
    std::str::from_utf8(testsig::matcher::EICAR).expect("EICAR is ASCII")
}

/// A small message carrying `body`.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n")
        .into_bytes()
}
