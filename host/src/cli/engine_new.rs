//! `cordon engine new`: a working engine project to start from.
//!
//! The project builds outside cordon's repository: for Rust it carries the
//! SDK (its source and the WIT package, the same files this cordon was
//! built from) under `vendor/`, so nothing but crates.io is needed; for
//! Python and JavaScript, the WIT package and a build script that installs
//! componentize-py from PyPI or componentize-js from npm; for C, the
//! contract's C bindings and a build script for Debian's clang and
//! wasi-libc that ends with `cordon engine componentize`. It is
//! an EICAR and GTUBE engine with a config whose self-test samples are the
//! ones `cordon engine test` checks.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::EXIT_CLEAN;
use super::engine_test::{CLEAN_MAIL, EICAR_MAIL, GTUBE_MAIL};

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
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with componentize-js.
    Js,
    /// C, with Debian's clang and wasi-libc, the contract's C bindings
    /// (wit-bindgen c) and `cordon engine componentize`.
    C,
}

/// The SDK's source and the WIT package, as this cordon was built.
const SDK_LIB: &str = include_str!("../../../engines/sdk/src/lib.rs");
const WIT: &str = include_str!("../../../wit/scanner.wit");
const SDK_VERSION: &str = "0.2.0";
/// The wit-bindgen the SDK was built with.
const WIT_BINDGEN: &str = "0.61.1";
/// The componentize-py a Python project installs (the one `./dev` tests
/// with).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
/// The componentize-js a JavaScript project installs (the one `./dev`
/// tests with).
const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

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
    let text = |files: Vec<(PathBuf, String)>| -> Vec<(PathBuf, Vec<u8>)> {
        files
            .into_iter()
            .map(|(p, t)| (p, t.into_bytes()))
            .collect()
    };
    let files = match args.lang {
        Lang::Rust => text(rust(name)),
        Lang::Python => text(python(name)),
        Lang::Js => text(javascript(name)),
        Lang::C => {
            let threat = threat_prefix(name);
            let mut files = super::engine_c::c(name, WIT, &threat)?;
            files.extend(
                script_files(name, &threat)
                    .into_iter()
                    .map(|(p, t)| (PathBuf::from(p), t.into_bytes())),
            );
            files
        }
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
        ("samples/eicar.eml", EICAR_MAIL.to_string()),
        ("samples/gtube.eml", GTUBE_MAIL.to_string()),
        ("samples/clean.eml", CLEAN_MAIL[0].1.to_string()),
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

/// The Python project's files (componentize-py).
fn python(name: &str) -> Vec<(PathBuf, String)> {
    let threat = threat_prefix(name);
    let files: Vec<(&str, String)> = vec![
        (
            "app.py",
            format!(
                r#""""{name}: a cordon scanning engine in Python (componentize-py).

It detects the EICAR and GTUBE test strings; replace `scan` with your own.
`init` runs once per generation and what it leaves in module globals is
snapshotted: every scan starts from a fresh copy of it.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

INFO = types.EngineInfo(
    name="{name}",
    vendor="Example Ltd",
    version="0.1.0",
    definitions_version="builtin",
    wants_parts=False,
)


def verdict(data):
    threats = []
    if EICAR in data:
        threats.append(types.Threat(name="{threat}.Eicar", kind=types.ThreatKind.VIRUS, part=""))
    if GTUBE in data:
        threats.append(types.Threat(name="{threat}.Gtube", kind=types.ThreatKind.SPAM, part=""))
    outcome = types.Outcome_Detected(threats) if threats else types.Outcome_Clean()
    return types.Verdict(outcome=outcome, spam_score=None, rules=[], recipients=[], headers=[])


class Engine(exports.Engine):
    def info(self):
        return INFO

    def init(self, settings):
        for s in settings:
            if s.key == "definitions_version":
                INFO.definitions_version = s.value
            else:
                # The text is shown to the operator: say which setting.
                raise Err(f"unknown setting {{s.key!r}}: {name} knows definitions_version")
        host.log(host.Level.INFO, "{name}: ready")
        return INFO

    def scan(self, envelope, message):
        return verdict(message)

    def scan_part(self, envelope, part, content):
        return verdict(content)

    def learn(self, envelope, message, class_, reference):
        return types.LearnOutcome.UNSUPPORTED
"#
            ),
        ),
        (
            "build.sh",
            format!(
                r#"#!/bin/sh
# Builds the component {name}.wasm with componentize-py (from PyPI, pinned,
# into .venv; or the one $COMPONENTIZE_PY names).
set -e
cd "$(dirname "$0")"
cpy="${{COMPONENTIZE_PY:-}}"
if [ -z "$cpy" ]; then
    if [ ! -x .venv/bin/componentize-py ]; then
        python3 -m venv .venv
        .venv/bin/pip install -q --disable-pip-version-check {COMPONENTIZE_PY}
    fi
    cpy=.venv/bin/componentize-py
fi
"$cpy" -d wit -w scanner componentize -p . app -o {name}.wasm
"#
            ),
        ),
        (
            "README.md",
            format!(
                r#"# {name}

A cordon scanning engine in Python (componentize-py, contract
`cordon:scanner@{SDK_VERSION}`, `wit/scanner.wit`).

    ./build.sh                                  # {name}.wasm
    cordon engine test {name}.wasm \
        --sample samples/eicar.eml={threat}.Eicar \
        --sample samples/gtube.eml={threat}.Gtube \
        --sample samples/clean.eml=clean        # the conformance suite
    cordon scan --config cordon.toml samples/   # scan mail with it

The component carries a Python interpreter (about 18 MB): its first load
compiles it (tens of seconds); later loads with the same inputs map the
cached snapshot. Give it `limits.memory_mib = 256` or more.
"#
            ),
        ),
    ];
    files
        .into_iter()
        .chain(script_files(name, &threat))
        .map(|(p, t)| (PathBuf::from(p), t))
        .collect()
}

/// The JavaScript project's files (componentize-js).
fn javascript(name: &str) -> Vec<(PathBuf, String)> {
    let threat = threat_prefix(name);
    let files: Vec<(&str, String)> = vec![
        (
            "engine.js",
            format!(
                r#"// {name}: a cordon scanning engine in JavaScript (componentize-js).
//
// It detects the EICAR and GTUBE test strings; replace `scan` with your
// own. `init` runs once per generation and what it leaves in module state
// is snapshotted: every scan starts from a fresh copy of it.

import {{ log }} from "cordon:scanner/host@{SDK_VERSION}";

const info = {{
  name: "{name}",
  vendor: "Example Ltd",
  version: "0.1.0",
  definitionsVersion: "builtin",
  wantsParts: false,
}};
const EICAR = new TextEncoder().encode(
  "X5O!P%@AP[4\\PZX54(P^)7CC)7}}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*",
);
const GTUBE = new TextEncoder().encode(
  "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X",
);

function contains(data, needle) {{
  outer: for (let i = 0; i + needle.length <= data.length; i++) {{
    for (let j = 0; j < needle.length; j++) {{
      if (data[i + j] !== needle[j]) continue outer;
    }}
    return true;
  }}
  return false;
}}

function verdict(data) {{
  const threats = [];
  if (contains(data, EICAR)) threats.push({{ name: "{threat}.Eicar", kind: "virus", part: "" }});
  if (contains(data, GTUBE)) threats.push({{ name: "{threat}.Gtube", kind: "spam", part: "" }});
  return {{
    outcome: threats.length ? {{ tag: "detected", val: threats }} : {{ tag: "clean" }},
    spamScore: undefined,
    rules: [],
    recipients: [],
    headers: [],
  }};
}}

export const engine = {{
  info() {{
    return info;
  }},
  init(settings) {{
    for (const {{ key, value }} of settings) {{
      // Thrown text is shown to the operator: say which setting.
      if (key === "definitions_version") info.definitionsVersion = value;
      else throw `unknown setting ${{key}}: {name} knows definitions_version`;
    }}
    log("info", "{name}: ready");
    return info;
  }},
  scan(envelope, message) {{
    return verdict(message);
  }},
  scanPart(envelope, part, content) {{
    return verdict(content);
  }},
  learn(envelope, message, class_, reference) {{
    return "unsupported";
  }},
}};
"#
            ),
        ),
        (
            "build.sh",
            format!(
                r#"#!/bin/sh
# Builds the component {name}.wasm with componentize-js (from npm, pinned,
# into node_modules; or the one $COMPONENTIZE_JS names).
set -e
cd "$(dirname "$0")"
cjs="${{COMPONENTIZE_JS:-}}"
if [ -z "$cjs" ]; then
    if [ ! -x node_modules/.bin/componentize-js ]; then
        npm install --silent --no-audit --no-fund --no-save {COMPONENTIZE_JS}
    fi
    cjs=node_modules/.bin/componentize-js
fi
"$cjs" engine.js -w wit -n scanner -o {name}.wasm
"#
            ),
        ),
        (
            "README.md",
            format!(
                r#"# {name}

A cordon scanning engine in JavaScript (componentize-js, contract
`cordon:scanner@{SDK_VERSION}`, `wit/scanner.wit`).

    ./build.sh                                  # {name}.wasm
    cordon engine test {name}.wasm \
        --sample samples/eicar.eml={threat}.Eicar \
        --sample samples/gtube.eml={threat}.Gtube \
        --sample samples/clean.eml=clean        # the conformance suite
    cordon scan --config cordon.toml samples/   # scan mail with it

The component carries a JavaScript engine (StarlingMonkey, about 12 MB):
its first load compiles it (tens of seconds); later loads with the same
inputs map the cached snapshot. It imports `wasi:http` (componentize-js's
default), which cordon links to functions that fail: an engine has no
network. Give it `limits.memory_mib = 256` or more.
"#
            ),
        ),
    ];
    files
        .into_iter()
        .chain(script_files(name, &threat))
        .map(|(p, t)| (PathBuf::from(p), t))
        .collect()
}

/// What the projects of languages built from a script share: the config
/// (the component is `NAME.wasm`, next to it), the samples, the WIT package.
fn script_files(name: &str, threat: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "cordon.toml",
            format!(
                r#"# cordon scan --config cordon.toml samples/
cache_dir = ".cordon-cache"

[engines.{name}]
component = "{name}.wasm"
limits.memory_mib = 256
self_test = [
  {{ file = "samples/eicar.eml", expect = "{threat}.Eicar" }},
  {{ file = "samples/gtube.eml", expect = "{threat}.Gtube" }},
  {{ file = "samples/clean.eml", expect = "clean" }},
]
"#
            ),
        ),
        ("samples/eicar.eml", EICAR_MAIL.to_string()),
        ("samples/gtube.eml", GTUBE_MAIL.to_string()),
        ("samples/clean.eml", CLEAN_MAIL[0].1.to_string()),
        ("wit/scanner.wit", WIT.to_string()),
    ]
}
