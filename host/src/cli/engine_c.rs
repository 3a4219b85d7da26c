//! Engines in C: the template `cordon engine new --lang c` writes, and
//! `cordon engine componentize`, which makes a component of the core
//! module a C (or any wasm32-wasi) toolchain builds.
//!
//! A C engine needs three things nobody had written down: bindings for
//! the contract (`wit-bindgen c`: a header, their C side, and an object
//! holding the world's type), the preview1 *reactor* adapter (the module
//! is a library whose exports cordon calls, not a program with a `main`),
//! and the rule that whatever the engine returns is freed by the bindings,
//! so it must be heap copies. cordon carries the first two: the template
//! comes with the bindings generated from the contract this cordon was
//! built with, and `componentize` adapts the module with the adapter of
//! the wasmtime cordon runs on. A vendor needs only Debian's clang, lld
//! and wasi-libc.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::EXIT_CLEAN;

/// `cordon engine componentize`.
#[derive(Debug, Args)]
pub struct ComponentizeArgs {
    /// A core WebAssembly module built for wasm32-wasi (preview1) as a
    /// reactor (`-mexec-model=reactor`), with the contract's bindings
    /// linked in (their `*_component_type.o`).
    #[arg(value_name = "CORE_WASM")]
    pub module: PathBuf,
    /// Where to write the component.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
}

/// The largest module `componentize` reads.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Runs `cordon engine componentize`; the exit code.
pub fn componentize_command(args: ComponentizeArgs) -> anyhow::Result<i32> {
    let size = std::fs::metadata(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?
        .len();
    if size > MAX_MODULE_BYTES {
        anyhow::bail!(
            "{}: {size} bytes, over the {MAX_MODULE_BYTES} componentize reads",
            args.module.display()
        );
    }
    let core = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    let component = componentize(&core).with_context(|| format!("{}", args.module.display()))?;
    std::fs::write(&args.output, &component)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    println!(
        "{} -> {} ({} bytes): check it with `cordon engine test {}`",
        args.module.display(),
        args.output.display(),
        component.len(),
        args.output.display()
    );
    Ok(EXIT_CLEAN)
}

/// The component of the core module `core`: its preview1 imports served
/// by the reactor adapter, its exports and imports those of the world type
/// embedded in it.
pub fn componentize(core: &[u8]) -> anyhow::Result<Vec<u8>> {
    if core.len() < 8 || &core[..4] != b"\0asm" {
        anyhow::bail!("not a WebAssembly module");
    }
    if core[4..8] != [1, 0, 0, 0] {
        anyhow::bail!(
            "already a component (or not a core module): componentize takes the core module the C compiler made"
        );
    }
    if !has_world(core)? {
        anyhow::bail!(
            "the module carries no world: link the bindings' *_component_type.o into it \
             (cordon engine new --lang c does)"
        );
    }
    wit_component::ComponentEncoder::default()
        .module(core)
        .context("cannot read the module's world")?
        .adapter(
            "wasi_snapshot_preview1",
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("cannot use the preview1 reactor adapter")?
        .validate(true)
        .encode()
        .context("cannot make a component of it")
}

/// Whether the core module `core` carries a world's type (the custom
/// section `wit-bindgen` puts in its `*_component_type.o`).
fn has_world(core: &[u8]) -> anyhow::Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(core) {
        if let wasmparser::Payload::CustomSection(c) = payload.context("not a valid module")?
            && c.name().starts_with("component-type")
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The bindings for the world `scanner` of the contract
/// `wit`, as `wit-bindgen c` writes them: `scanner.h`, `scanner.c`,
/// `scanner_component_type.o`.
fn bindings(wit: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    use wit_bindgen_core::wit_parser::Resolve;
    let mut resolve = Resolve::default();
    let package = resolve
        .push_str("scanner.wit", wit)
        .context("cannot read the WIT package")?;
    let world = resolve
        .select_world(&[package], Some("scanner"))
        .context("no world `scanner`")?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, world, &mut files)
        .context("cannot generate the C bindings")?;
    Ok(files
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect())
}

/// The C project's files, under `root`.
pub fn c(name: &str, wit: &str, threat: &str) -> anyhow::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = bindings(wit)?
        .into_iter()
        .map(|(n, b)| (Path::new("bindings").join(n), b))
        .collect();
    let text = |p: &str, t: String| (PathBuf::from(p), t.into_bytes());
    files.push(text(
        "engine.c",
        ENGINE_C
            .replace("__NAME__", name)
            .replace("__THREAT__", threat),
    ));
    files.push(text(
        "build.sh",
        format!(
            r#"#!/bin/sh
# Builds {name}.wasm: clang for wasm32-wasi (Debian: clang lld wasi-libc
# libclang-rt-14-dev-wasm32), then `cordon engine componentize` with the
# preview1 reactor adapter. $CC and $CORDON name other tools.
set -eu
cd "$(dirname "$0")"
CC=${{CC:-clang}}
CORDON=${{CORDON:-cordon}}
mkdir -p build
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror \
    -Ibindings -o build/{name}.core.wasm \
    engine.c bindings/scanner.c bindings/scanner_component_type.o
"$CORDON" engine componentize build/{name}.core.wasm -o {name}.wasm
echo "built {name}.wasm: cordon engine test {name}.wasm"
"#
        ),
    ));
    files.push(text(
        "README.md",
        format!(
            r#"# {name}: a cordon engine in C

`./build.sh` builds `{name}.wasm` (Debian: `apt-get install clang lld
wasi-libc libclang-rt-14-dev-wasm32`); `cordon engine test {name}.wasm`
checks it; `cordon scan --config cordon.toml samples/` scans the samples.

`engine.c` is the engine: replace `judge` with your own. `bindings/` holds
the contract's C bindings as `wit-bindgen c` 0.61.1 writes them, generated
by the cordon that made this project; regenerate them with `wit-bindgen c
--world scanner wit/` when the contract changes.

Two rules of the bindings: the arguments an export gets are the engine's
to free (`*_free`); what it returns the bindings free after the call, so
every string and list in it must be a heap copy (`scanner_string_dup`,
`calloc`), never a literal or a piece of an argument. `init` runs once
per generation and cordon snapshots the memory it leaves: put what scans
need in static storage there.
"#
        ),
    ));
    Ok(files)
}

/// The C engine, `__NAME__` and `__THREAT__` to be filled in.
const ENGINE_C: &str = r#"// __NAME__: a cordon scanning engine in C.
//
// It detects the EICAR and GTUBE test strings; replace `judge` with your
// own. The bindings (bindings/scanner.h) are the contract's, generated by
// `wit-bindgen c`. Two rules they impose:
// - the arguments of an export are the engine's: free them when done
//   (the `*_free` functions);
// - what an export returns is freed by the bindings after the call, so
//   every string and list in it must be a heap copy (`scanner_string_dup`,
//   `calloc`), never a pointer to a literal or into an argument.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scanner.h"

static const char EICAR[] =
    "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
static const char GTUBE[] =
    "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

// Set by init, which cordon runs once per generation before it snapshots
// the engine's memory: every scan starts from this state.
static bool initialised = false;

static bool contains(const uint8_t *hay, size_t len, const char *needle) {
    return memmem(hay, len, needle, strlen(needle)) != NULL;
}

static void fill_info(exports_cordon_scanner_engine_engine_info_t *ret) {
    scanner_string_dup(&ret->name, "__NAME__");
    scanner_string_dup(&ret->vendor, "Example Ltd");
    scanner_string_dup(&ret->version, "0.1.0");
    scanner_string_dup(&ret->definitions_version, initialised ? "builtin" : "");
    ret->wants_parts = false;
}

void exports_cordon_scanner_engine_info(exports_cordon_scanner_engine_engine_info_t *ret) {
    fill_info(ret);
}

bool exports_cordon_scanner_engine_init(exports_cordon_scanner_engine_list_setting_t *settings,
                                        exports_cordon_scanner_engine_engine_info_t *ret,
                                        scanner_string_t *err) {
    // This engine takes no settings: an unknown one is refused, by name.
    if (settings->len > 0) {
        scanner_string_t *key = &settings->ptr[0].key;
        char msg[200];
        int n = snprintf(msg, sizeof msg, "unknown setting %.*s: __NAME__ takes none",
                         (int)(key->len > 64 ? 64 : key->len), (const char *)key->ptr);
        scanner_string_dup_n(err, msg, n > 0 && (size_t)n < sizeof msg ? (size_t)n : 0);
        exports_cordon_scanner_engine_list_setting_free(settings);
        return false;
    }
    exports_cordon_scanner_engine_list_setting_free(settings);
    initialised = true;
    fill_info(ret);
    return true;
}

static void threat(cordon_scanner_types_threat_t *t, const char *name,
                   cordon_scanner_types_threat_kind_t kind) {
    scanner_string_dup(&t->name, name);
    t->kind = kind;
    scanner_string_dup(&t->part, "");
}

// The verdict on `len` bytes at `data`.
static void judge(const uint8_t *data, size_t len, exports_cordon_scanner_engine_verdict_t *ret) {
    memset(ret, 0, sizeof *ret);
    bool eicar = contains(data, len, EICAR);
    bool gtube = contains(data, len, GTUBE);
    if (!eicar && !gtube) {
        ret->outcome.tag = CORDON_SCANNER_TYPES_OUTCOME_CLEAN;
        return;
    }
    size_t n = (size_t)eicar + (size_t)gtube, i = 0;
    cordon_scanner_types_threat_t *threats = calloc(n, sizeof *threats);
    if (eicar) {
        threat(&threats[i++], "__THREAT__.Eicar", CORDON_SCANNER_TYPES_THREAT_KIND_VIRUS);
    }
    if (gtube) {
        threat(&threats[i++], "__THREAT__.Gtube", CORDON_SCANNER_TYPES_THREAT_KIND_SPAM);
        ret->spam_score.is_some = true;
        ret->spam_score.val = 1000.0;
        ret->rules.ptr = calloc(1, sizeof *ret->rules.ptr);
        ret->rules.len = 1;
        scanner_string_dup(&ret->rules.ptr[0], "GTUBE");
    }
    ret->outcome.tag = CORDON_SCANNER_TYPES_OUTCOME_DETECTED;
    ret->outcome.val.detected.ptr = threats;
    ret->outcome.val.detected.len = n;
}

void exports_cordon_scanner_engine_scan(exports_cordon_scanner_engine_envelope_t *envelope,
                                        scanner_list_u8_t *message,
                                        exports_cordon_scanner_engine_verdict_t *ret) {
    judge(message->ptr, message->len, ret);
    exports_cordon_scanner_engine_envelope_free(envelope);
    scanner_list_u8_free(message);
}

void exports_cordon_scanner_engine_scan_part(exports_cordon_scanner_engine_envelope_t *envelope,
                                             exports_cordon_scanner_engine_part_info_t *part,
                                             scanner_list_u8_t *content,
                                             exports_cordon_scanner_engine_verdict_t *ret) {
    // Called only when `wants_parts` is true.
    judge(content->ptr, content->len, ret);
    exports_cordon_scanner_engine_envelope_free(envelope);
    exports_cordon_scanner_engine_part_info_free(part);
    scanner_list_u8_free(content);
}

bool exports_cordon_scanner_engine_learn(exports_cordon_scanner_engine_envelope_t *envelope,
                                         scanner_list_u8_t *message,
                                         exports_cordon_scanner_engine_learn_class_t class_,
                                         scanner_string_t *maybe_reference,
                                         exports_cordon_scanner_engine_learn_outcome_t *ret,
                                         scanner_string_t *err) {
    (void)class_;
    (void)err;
    exports_cordon_scanner_engine_envelope_free(envelope);
    scanner_list_u8_free(message);
    if (maybe_reference) {
        scanner_string_free(maybe_reference);
    }
    *ret = CORDON_SCANNER_TYPES_LEARN_OUTCOME_UNSUPPORTED;
    return true;
}
"#;
