//! Pre-initialised snapshots cached by their inputs: a load whose
//! component, definitions, settings and limits are unchanged maps the
//! snapshot an earlier load built (no `init`), and a change to any of them
//! builds a new one. Which happened is read from the generation
//! (`SnapshotSource`), never from timing.

use std::path::Path;

use cordon::engine::SnapshotSource;

use crate::common::*;

/// The snapshot source of the one engine `text` configures, and whether
/// the loaded generation still finds EICAR.
fn load(text: &str) -> (SnapshotSource, bool) {
    let reg = registry_from_toml(text);
    let g = reg.enabled()[0].clone();
    let outcome = g.scan_blocking(&cordon::bindings::empty_envelope(), &message("s", eicar()));
    let detected = matches!(
        outcome,
        cordon::engine::EngineOutcome::Verdict(ref v)
            if matches!(v.outcome, cordon::bindings::Outcome::Detected(_))
    );
    (g.snapshot, detected)
}

/// `component` with a custom section appended: other bytes, the same code.
fn with_custom_section(component: &Path, out: &Path, note: &str) {
    let mut bytes = std::fs::read(component).unwrap();
    let name = b"cordon-test";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(note.as_bytes());
    assert!(payload.len() < 128, "one-byte LEB128 length");
    bytes.push(0);
    bytes.push(payload.len() as u8);
    bytes.extend_from_slice(&payload);
    std::fs::write(out, bytes).unwrap();
}

#[test]
fn unchanged_inputs_map_the_cached_snapshot_and_any_change_rebuilds_it() {
    use SnapshotSource::{Built, Cached};
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("local.ndb"),
        "Snap.Eicar:0:*:58354f2150254041505b345c505a5835\n",
    )
    .unwrap();
    let wasm = dir.path().join("clamsig.wasm");
    std::fs::copy(component("clamsig"), &wasm).unwrap();
    let config = |settings: &str| {
        format!(
            "cache_dir = {}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n{settings}\n",
            toml_path(&cache),
            toml_path(&wasm),
            toml_path(&defs)
        )
    };
    let text = config("");
    assert_eq!(load(&text), (Built, true), "a cold cache builds");
    assert_eq!(load(&text), (Cached, true), "unchanged inputs map it");

    // A definitions file changed (same size), then changed back.
    std::fs::write(
        defs.join("local.ndb"),
        "Snap.Eicar:0:*:58354f2150254041505b345c505a5836\n",
    )
    .unwrap();
    assert_eq!(load(&text), (Built, false), "new definitions rebuild");
    assert_eq!(load(&text), (Cached, false));
    std::fs::write(defs.join("extra.ndb"), "Snap.Other:0:*:0102030405060708\n").unwrap();
    assert_eq!(load(&text).0, Built, "a file added rebuilds");

    // A setting.
    let text = config("settings.definitions_version = \"v2\"");
    assert_eq!(load(&text).0, Built, "a changed setting rebuilds");
    assert_eq!(load(&text).0, Cached);

    // A limit `init` runs under.
    let limited = config("settings.definitions_version = \"v2\"\nlimits.memory_mib = 200");
    assert_eq!(load(&limited).0, Built, "a changed memory limit rebuilds");
    // A limit that only bears on scans does not.
    let scan_only = config("settings.definitions_version = \"v2\"\nlimits.timeout_ms = 4321");
    assert_eq!(
        load(&scan_only).0,
        Cached,
        "the scan timeout is not an input"
    );

    // The component's bytes.
    with_custom_section(&component("clamsig"), &wasm, "another build");
    assert_eq!(load(&text).0, Built, "a changed component rebuilds");
    assert_eq!(load(&text).0, Cached);

    // A cache bound of 0 keeps nothing.
    let none = format!("cache_dir_max_mib = 0\n{text}");
    std::fs::write(defs.join("extra.ndb"), "Snap.Other:0:*:0102030405060709\n").unwrap();
    assert_eq!(load(&none).0, Built);
    assert_eq!(
        load(&none).0,
        Built,
        "nothing kept with cache_dir_max_mib = 0"
    );
}

/// What an operator sees: a second `cordon engines` with unchanged inputs
/// reports the snapshot as cached, with the image size of the build.
#[test]
fn a_second_cli_load_reports_the_cached_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.testsig]\ncomponent = {}\nsettings.definitions_version = \"snap-cli\"\n",
            toml_path(&dir.path().join("cache")),
            toml_path(&component("testsig"))
        ),
    );
    let source = |o: &std::process::Output| -> (String, u64) {
        assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (
            v[0]["snapshot"].as_str().unwrap_or("?").to_string(),
            v[0]["image_bytes"].as_u64().unwrap_or(0),
        )
    };
    let args = ["engines", "--json", "--config", cfg.to_str().unwrap()];
    let (built, image) = source(&cordon(&args));
    assert_eq!(built, "built");
    assert!(image > 0, "image of {image} bytes");
    // The cached generation reports the same image as the one that built it.
    assert_eq!(source(&cordon(&args)), ("cached".to_string(), image));
}

/// A cache directory others can write to is refused before anything is
/// loaded from it, naming it.
#[test]
fn an_unsafe_cache_directory_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let err = registry_load_error(&format!(
        "cache_dir = {}\n[engines.testsig]\ncomponent = {}\n",
        toml_path(&cache),
        toml_path(&component("testsig"))
    ));
    assert!(
        err.contains(&cache.display().to_string()) && err.contains("writable by every user"),
        "{err}"
    );
}

/// The snapshot is built in a child process: the engine's own log lines
/// from `init` reach cordon's log through the child (relayed, at their
/// level), and a failing `init` in the child is the same load error as
/// before, naming the engine's reason.
#[test]
fn the_snapshot_is_built_in_a_child_and_its_errors_and_logs_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(defs.join("a.ndb"), "Child.Sig:0:*:0102030405060708\n").unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n",
            toml_path(&dir.path().join("cache")),
            toml_path(&component("clamsig")),
            toml_path(&defs)
        ),
    );
    let o = cordon(&[
        "check-config",
        "--log",
        "info",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(
        log.contains("snapshot build (clamsig): loaded 1 signatures"),
        "{log}"
    );
    assert!(log.contains("snapshot=Built"), "{log}");

    // A broken database: the child's init fails, the load error names the
    // file and line as the in-process load did.
    std::fs::write(defs.join("a.ndb"), "Broken:0:*:zz\n").unwrap();
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("a.ndb line 1") && err.contains("engine clamsig"),
        "{err}"
    );
    assert!(!err.contains("snapshot build ended"), "{err}");
}

/// The snapshot reads the engine's whole initialised state; that transfer
/// is not held to the per-call bound on what a guest hands the host
/// (`max_verdict_bytes`), so an engine with more state than that loads
/// (with the smallest bound, 64 KiB + 2 KiB per call, any engine has more).
#[test]
fn an_engine_with_more_state_than_the_hostcall_bound_loads() {
    let dir = tempfile::tempdir().unwrap();
    let reg = registry_from_toml(&format!(
        "cache_dir = {}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n\
         limits.max_verdict_bytes = 1024\n",
        toml_path(&dir.path().join("cache")),
        toml_path(&component("clamsig")),
        toml_path(&root().join("engines/clamsig/definitions"))
    ));
    let g = reg.enabled()[0].clone();
    assert!(
        g.image_bytes > 66 * 1024,
        "image of {} bytes",
        g.image_bytes
    );
    let outcome = g.scan_blocking(&cordon::bindings::empty_envelope(), &message("s", eicar()));
    assert!(
        matches!(
            outcome,
            cordon::engine::EngineOutcome::Verdict(ref v)
                if matches!(v.outcome, cordon::bindings::Outcome::Detected(_))
        ),
        "{outcome:?}"
    );
}

/// How `cordon engines --json` says the one engine in `cfg` was loaded
/// (`built` or `cached`), after checking it is `name`.
fn snapshot_of(cfg: &str, name: &str) -> String {
    let o = cordon(&["engines", "--json", "--config", cfg]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], name, "{v}");
    v[0]["snapshot"].as_str().unwrap_or("?").to_string()
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A mail in `dir` whose attachment `m.bin` holds `marker`, base64-encoded.
fn mail_with_attachment(dir: &Path, marker: &str) -> std::path::PathBuf {
    let path = dir.join("marked.eml");
    std::fs::write(
        &path,
        format!(
            "From: a@example.org\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
             Content-Type: text/plain\r\n\r\nhello\r\n--b\r\n\
             Content-Type: application/octet-stream; name=m.bin\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
            base64(marker.as_bytes())
        ),
    )
    .unwrap();
    path
}

/// `cordon scan --json` of `mail` with `cfg`: a detection, whose first
/// threat is returned as (name, part).
fn first_threat(cfg: &str, mail: &Path) -> (String, String) {
    let o = cordon(&["scan", "--json", "--config", cfg, mail.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    // One JSON line per message, then the summary.
    let first = stdout(&o).lines().next().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&first).unwrap();
    let threat = &v["decision"]["threats"][0];
    (
        threat["name"].as_str().unwrap_or_default().to_string(),
        threat["part"].as_str().unwrap_or_default().to_string(),
    )
}

/// Exit code of `cordon scan` of `mail` with `cfg`.
fn scan_code(cfg: &str, mail: &Path) -> Option<i32> {
    cordon(&["scan", "--config", cfg, mail.to_str().unwrap()])
        .status
        .code()
}

/// An engine written in Python (componentize-py, `tests/engines/pysig`)
/// loads, reads its definitions in `init`, scans whole messages and
/// decoded parts, and is cached like any other: the second `cordon
/// engines` with unchanged inputs maps the snapshot (no Python `init`,
/// no compile), and a changed definitions file builds a new one.
#[test]
fn a_python_engine_loads_scans_and_its_second_load_maps_the_cached_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    std::fs::write(
        defs.join("local.sig"),
        "# pysig test\nPy.Marker=PYSIG-MARKER-1\n",
    )
    .unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.pysig]\ncomponent = {}\ndefinitions = {}\n\
             settings.definitions_version = \"py-1\"\nlimits.memory_mib = 256\n",
            toml_path(&dir.path().join("cache")),
            toml_path(&component("pysig")),
            toml_path(&defs)
        ),
    );
    let cfg = cfg.to_str().unwrap();
    assert_eq!(snapshot_of(cfg, "pysig"), "built", "a cold cache builds");
    assert_eq!(
        snapshot_of(cfg, "pysig"),
        "cached",
        "unchanged inputs map the snapshot"
    );

    // The cached generation scans: the marker in a base64 attachment is
    // found in the decoded part, a clean message is clean.
    let mail = mail_with_attachment(dir.path(), "PYSIG-MARKER-1");
    assert_eq!(
        first_threat(cfg, &mail),
        ("Py.Marker".to_string(), "m.bin".to_string())
    );
    let clean = dir.path().join("clean.eml");
    std::fs::write(&clean, "Subject: t\r\n\r\nPYSIG-MARKER-2\r\n").unwrap();
    assert_eq!(scan_code(cfg, &clean), Some(0));

    // New definitions: a new snapshot, which finds the new marker.
    std::fs::write(defs.join("local.sig"), "Py.Marker2=PYSIG-MARKER-2\n").unwrap();
    assert_eq!(
        snapshot_of(cfg, "pysig"),
        "built",
        "changed definitions rebuild"
    );
    assert_eq!(scan_code(cfg, &clean), Some(1));
}

/// A new snapshot of a component whose functions were compiled before
/// takes them from the component's function cache (a definitions update
/// compiles only what changed), and that file stays one compile's worth.
#[test]
fn a_new_snapshot_takes_the_components_compiled_functions_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let defs = dir.path().join("defs");
    std::fs::create_dir(&defs).unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.clamsig]\ncomponent = {}\ndefinitions = {}\n",
            toml_path(&cache),
            toml_path(&component("clamsig")),
            toml_path(&defs)
        ),
    );
    // (hits, added) of the snapshot compile, from the debug log.
    let build = |sig: &str| -> (usize, usize) {
        std::fs::write(defs.join("a.ndb"), format!("Fn.Sig:0:*:{sig}\n")).unwrap();
        let o = cordon(&[
            "check-config",
            "--log",
            "info,cordon=debug",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        let log = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{log}");
        assert!(log.contains("snapshot=Built"), "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("functions from the function cache"))
            .unwrap_or_else(|| panic!("no function cache line in {log}"));
        let field = |name: &str| -> usize {
            let at = line.find(&format!("{name}=")).expect(name) + name.len() + 1;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("hits"), field("added"))
    };
    let (_, first_added) = build("0102030405060708");
    assert!(first_added > 100, "a cold cache compiles every function");
    let (hits, added) = build("0102030405060709");
    assert!(
        hits > 10 * added && hits >= first_added / 2,
        "the second snapshot took {hits} functions from the cache and compiled {added}"
    );
    let functions: Vec<_> = std::fs::read_dir(cache.join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "functions"))
        .collect();
    assert_eq!(functions.len(), 1, "one function cache per component");
}

/// An engine written in JavaScript (componentize-js, `tests/engines/jssig`,
/// built with componentize-js's default flags, so it imports `wasi:http`)
/// loads, scans decoded parts, and its second load maps the cached
/// snapshot; a changed setting builds a new one.
#[test]
fn a_javascript_engine_loads_scans_and_its_second_load_maps_the_cached_snapshot() {
    let imports =
        cordon::engine::imports::imports(&std::fs::read(component("jssig")).unwrap()).unwrap();
    assert!(
        imports.iter().any(|i| i.starts_with("wasi:http/")),
        "built with the default flags, jssig imports wasi:http: {imports:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = |marker: &str| {
        write_config(
            dir.path(),
            &format!(
                "cache_dir = {}\n[engines.jssig]\ncomponent = {}\n\
                 settings.marker = \"{marker}\"\nlimits.memory_mib = 256\n",
                toml_path(&dir.path().join("cache")),
                toml_path(&component("jssig")),
            ),
        )
    };
    let cfg = config("JS-MARKER-1");
    let cfg = cfg.to_str().unwrap();
    assert_eq!(snapshot_of(cfg, "jssig"), "built", "a cold cache builds");
    assert_eq!(
        snapshot_of(cfg, "jssig"),
        "cached",
        "unchanged inputs map the snapshot"
    );
    let mail = mail_with_attachment(dir.path(), "JS-MARKER-1");
    assert_eq!(
        first_threat(cfg, &mail),
        ("Js.Marker".to_string(), "m.bin".to_string())
    );

    // Another marker: a new snapshot, and the old marker is clean.
    config("JS-MARKER-2");
    assert_eq!(
        snapshot_of(cfg, "jssig"),
        "built",
        "a changed setting rebuilds"
    );
    assert_eq!(scan_code(cfg, &mail), Some(0));
}
