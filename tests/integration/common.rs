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

/// The GTUBE string (SpamAssassin's test pattern).
pub fn gtube() -> &'static str {
    std::str::from_utf8(testsig::matcher::GTUBE).expect("GTUBE is ASCII")
}

/// A small message carrying `body`.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!("From: a@example.org\r\nTo: b@example.com\r\nSubject: {subject}\r\n\r\n{body}\r\n")
        .into_bytes()
}

/// A config validated from text (`cache_dir` included by the caller), or a
/// panic naming the key that is wrong.
pub fn config_from_toml(text: &str) -> cordon::config::ValidConfig {
    let path = Path::new("test.toml");
    cordon::config::Config::parse(text, path)
        .and_then(|c| c.validate(path))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A registry loaded from config text (`cache_dir` included by the caller).
pub fn registry_from_toml(text: &str) -> cordon::registry::Registry {
    let config = config_from_toml(text);
    cordon::registry::Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `cordon scan --no-summary` of a small clean message with the hostile
/// engine in `mode` as the only engine, logging at `log`.
pub fn scan_with_hostile_cli(mode: &str, log: &str) -> Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.hostile]\ncomponent = {}\nsettings.mode = \"{mode}\"\n",
            toml_path(&cache_dir()),
            toml_path(&component("hostile"))
        ),
    );
    let mail = dir.path().join("m.eml");
    std::fs::write(&mail, message(mode, "hello")).expect("writing the message");
    Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["scan", "--no-summary", "--config"])
        .arg(&cfg)
        .arg(&mail)
        .current_dir(root())
        .env("CORDON_LOG", log)
        .output()
        .expect("running cordon")
}

/// The error of loading a registry from config text that must not load.
pub fn registry_load_error(text: &str) -> String {
    let config = config_from_toml(text);
    match cordon::registry::Registry::load(&config.registry) {
        Ok(_) => panic!("loaded, but it must be refused:\n{text}"),
        Err(e) => format!("{e:#}"),
    }
}
