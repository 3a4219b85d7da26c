//! `cordon engine new`: a working engine project to start from.
//!
//! The project builds outside cordon's repository: for Rust it carries the
//! SDK (its source and the WIT package, the same files this cordon was
//! built from) under `vendor/`, so nothing but crates.io is needed. It is
//! an EICAR and GTUBE engine with a config whose self-test samples are the
//! ones `cordon engine test` checks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::EXIT_CLEAN;

/// `cordon engine new`.
#[derive(Debug, Args)]
pub struct EngineNewArgs {
    /// The engine's name: lower case letters, digits and '-', starting with
    /// a letter. The project is made in a new directory of that name.
    pub name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to make the project directory (default: here).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// The languages there are templates for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Lang {
    /// Rust, with cordon-engine-sdk.
    Rust,
}

/// The SDK's source and the WIT package, as this cordon was built.
const SDK_LIB: &str = include_str!("../../../engines/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/scanner.wit");
const SDK_VERSION: &str = "0.2.0";
/// The wit-bindgen the SDK was built with.
const WIT_BINDGEN: &str = "0.61.1";

/// Makes the project; the exit code.
pub fn engine_new_command(args: EngineNewArgs) -> anyhow::Result<i32> {
    let name = &args.name;
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.len() <= 64;
    if !valid {
        anyhow::bail!(
            "engine name {:?}: use lower case letters, digits and '-', starting with a letter (at most 64)",
            crate::text::escape(name, 80)
        );
    }
    let root = args.dir.join(name);
    if root.exists() {
        anyhow::bail!("{} already exists", root.display());
    }
    let files = match args.lang {
        Lang::Rust => rust(name),
    };
    for (path, text) in &files {
        let path = root.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    make_executable(&root.join("build.sh"))?;
    println!(
        "made {} ({} files): cd {} && ./build.sh, then see README.md",
        root.display(),
        files.len(),
        root.display()
    );
    Ok(EXIT_CLEAN)
}

fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

/// A message carrying EICAR, and a clean one.
const EICAR_EML: &str = "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: eicar\r\n\r\nX5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*\r\n";
const GTUBE_EML: &str = "From: sender@example.org\r\nTo: rcpt@example.com\r\nSubject: gtube\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n";
const CLEAN_EML: &str = "From: alice@example.org\r\nTo: bob@example.com\r\nSubject: lunch\r\n\r\nShall we meet at noon?\r\n";

/// The Rust project's files.
fn rust(name: &str) -> Vec<(PathBuf, String)> {
    let lib = name.replace('-', "_");
    let threat = threat_prefix(name);
    let files: Vec<(&str, String)> = vec![
        (
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
# The SDK as this cordon was built (vendor/): cordon-engine-sdk {SDK_VERSION},
# for the WIT package cordon:scanner@{SDK_VERSION}.
cordon-engine-sdk = {{ path = "vendor/cordon-engine-sdk" }}

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"

# A project of its own, even inside another workspace.
[workspace]
"#
            ),
        ),
        (
            "src/lib.rs",
            format!(
                r#"//! {name}: a cordon scanning engine. It detects the EICAR and GTUBE test
//! strings; replace `scan` with your own.

use cordon_engine_sdk::{{Engine, Envelope, Settings, Threat, ThreatKind, Verdict, export_engine}};

/// The engine's state, built once per generation by `init` and shared by
/// every scan (each scan starts from a fresh copy of it).
struct MyEngine {{
    definitions: String,
}}

const EICAR: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
const GTUBE: &[u8] = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {{
    haystack.windows(needle.len()).any(|w| w == needle)
}}

impl Engine for MyEngine {{
    const NAME: &'static str = "{name}";
    const VENDOR: &'static str = "Example Ltd";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    /// Settings come from `[engines.NAME.settings]`; definitions (when the
    /// operator sets `definitions = "DIR"`) are readable here, as
    /// `/definitions`, and nowhere else.
    fn init(settings: &Settings) -> Result<Self, String> {{
        let definitions = settings
            .get("definitions_version")
            .cloned()
            .unwrap_or_else(|| "builtin".into());
        Ok(MyEngine {{ definitions }})
    }}

    fn definitions_version(&self) -> String {{
        self.definitions.clone()
    }}

    fn scan(&self, _envelope: &Envelope, message: &[u8]) -> Verdict {{
        let mut threats = Vec::new();
        if contains(message, EICAR) {{
            threats.push(Threat::new("{threat}.Eicar", ThreatKind::Virus));
        }}
        if contains(message, GTUBE) {{
            threats.push(Threat::new("{threat}.Gtube", ThreatKind::Spam));
        }}
        Verdict::detected(threats)
    }}
}}

export_engine!(MyEngine);
"#
            ),
        ),
        (
            "build.sh",
            format!(
                r#"#!/bin/sh
# Builds the component: target/wasm32-wasip2/release/{lib}.wasm
# (under $CARGO_TARGET_DIR when it is set).
set -e
cd "$(dirname "$0")"
rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2
"#
            ),
        ),
        (
            "cordon.toml",
            format!(
                r#"# cordon scan --config cordon.toml samples/
cache_dir = ".cordon-cache"

[engines.{name}]
component = "target/wasm32-wasip2/release/{lib}.wasm"
self_test = [
  {{ file = "samples/eicar.eml", expect = "{threat}.Eicar" }},
  {{ file = "samples/gtube.eml", expect = "{threat}.Gtube" }},
  {{ file = "samples/clean.eml", expect = "clean" }},
]
"#
            ),
        ),
        ("samples/eicar.eml", EICAR_EML.to_string()),
        ("samples/gtube.eml", GTUBE_EML.to_string()),
        ("samples/clean.eml", CLEAN_EML.to_string()),
        (
            "README.md",
            format!(
                r#"# {name}

A cordon scanning engine (Rust, cordon-engine-sdk {SDK_VERSION}, contract
`cordon:scanner@{SDK_VERSION}`).

    ./build.sh                                  # the component
    cordon engine test target/wasm32-wasip2/release/{lib}.wasm \
        --sample samples/eicar.eml={threat}.Eicar \
        --sample samples/gtube.eml={threat}.Gtube \
        --sample samples/clean.eml=clean        # the conformance suite
    cordon scan --config cordon.toml samples/   # scan mail with it

`vendor/cordon-engine-sdk` is the SDK as the cordon that made this project
was built; the contract is `vendor/cordon-engine-sdk/wit/scanner.wit`.
Settings: `cordon engine test ... --setting key=value`, or
`[engines.{name}.settings]` in cordon.toml.
"#
            ),
        ),
        (
            "vendor/cordon-engine-sdk/Cargo.toml",
            format!(
                r#"[package]
name = "cordon-engine-sdk"
description = "Write a cordon scanning engine: one trait impl and one export macro"
version = "{SDK_VERSION}"
edition = "2024"
license = "Apache-2.0 OR MIT"

[dependencies]
wit-bindgen = {{ version = "={WIT_BINDGEN}", default-features = false, features = ["macros", "realloc"] }}
"#
            ),
        ),
        ("vendor/cordon-engine-sdk/src/lib.rs", SDK_LIB.to_string()),
        ("vendor/cordon-engine-sdk/wit/scanner.wit", WIT.to_string()),
    ];
    files
        .into_iter()
        .map(|(p, t)| (PathBuf::from(p), t))
        .collect()
}

/// The threat name prefix for engine `name`: `my-engine` is `My-engine`.
fn threat_prefix(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}
