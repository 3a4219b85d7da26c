//! The vendor kit: `cordon engine test`, the conformance suite.

use crate::common::*;

/// The suite's PASS/FAIL lines, as (passed, check name).
fn checks(out: &str) -> Vec<(bool, String)> {
    out.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let (ok, rest) = if let Some(r) = l.strip_prefix("PASS ") {
                (true, r)
            } else {
                (false, l.strip_prefix("FAIL ")?)
            };
            Some((ok, rest.split(':').next().unwrap_or("").to_string()))
        })
        .collect()
}

#[test]
fn a_good_engine_passes_every_check_and_gets_figures() {
    for wasm in [
        component("testsig"),
        // Built against contract 0.1.0: no `learn`, which is `unsupported`.
        root().join("tests/fixtures/engines/testsig-0.1.0.wasm"),
    ] {
        let o = cordon(&["engine", "test", wasm.to_str().unwrap()]);
        let out = stdout(&o);
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        let names: Vec<String> = checks(&out).into_iter().map(|(_, n)| n).collect();
        for want in [
            "loads",
            "loads from the snapshot cache",
            "info",
            "within limits",
            "deterministic and independent",
            "clean mail is clean",
            "detects a test file",
            "learn",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {out}");
        }
        assert!(checks(&out).iter().all(|(ok, _)| *ok), "{out}");
        assert!(out.contains("learn: spam -> unsupported"), "{out}");
        assert!(out.contains("figures: first load"), "{out}");
        assert!(out.contains("8 passed, 0 failed"), "{out}");
    }
}

#[test]
fn settings_definitions_and_own_samples_are_used() {
    let clamsig = component("clamsig");
    let o = cordon(&[
        "engine",
        "test",
        clamsig.to_str().unwrap(),
        "--definitions",
        "engines/clamsig/definitions",
        "--sample",
        "samples/eicar.eml=Sample.Eicar.UNOFFICIAL",
        "--sample",
        "samples/clean.eml=clean",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("PASS samples: 2 as expected"), "{out}");

    // A wrong expectation fails, naming the sample and what was found.
    let o = cordon(&[
        "engine",
        "test",
        clamsig.to_str().unwrap(),
        "--definitions",
        "engines/clamsig/definitions",
        "--sample",
        "samples/clean.eml=detected",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("FAIL samples: samples/clean.eml: clean, expected detected"),
        "{out}"
    );
}

#[test]
fn a_broken_engine_fails_naming_what_went_wrong() {
    let hostile = component("hostile");
    // Panics on every scan.
    let o = cordon(&[
        "engine",
        "test",
        hostile.to_str().unwrap(),
        "--setting",
        "mode=panic",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let failed: Vec<String> = checks(&out)
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, n)| n)
        .collect();
    assert!(failed.contains(&"within limits".to_string()), "{out}");
    assert!(failed.contains(&"clean mail is clean".to_string()), "{out}");
    assert!(out.contains("trap"), "{out}");

    // Refuses to start: the suite stops at the load, naming the reason.
    let o = cordon(&[
        "engine",
        "test",
        hostile.to_str().unwrap(),
        "--setting",
        "mode=bad-init",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("FAIL loads:"), "{out}");
}

/// `cordon engine new --lang rust` makes a project that builds outside the
/// repository (the SDK and the WIT package travel in it) and passes the
/// suite; its config's self-tests pass on load.
#[test]
fn the_rust_template_builds_outside_the_repository_and_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let o = cordon(&[
        "engine",
        "new",
        "demo-engine",
        "--lang",
        "rust",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let project = dir.path().join("demo-engine");
    assert!(!project.starts_with(root()));
    let built = std::process::Command::new("./build.sh")
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("running build.sh");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = project.join("target/wasm32-wasip2/release/demo_engine.wasm");
    let o = cordon(&[
        "engine",
        "test",
        wasm.to_str().unwrap(),
        "--sample",
        &format!(
            "{}=Demo-engine.Eicar",
            project.join("samples/eicar.eml").display()
        ),
        "--sample",
        &format!(
            "{}=Demo-engine.Gtube",
            project.join("samples/gtube.eml").display()
        ),
        "--sample",
        &format!("{}=clean", project.join("samples/clean.eml").display()),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("8 passed, 0 failed"), "{out}");

    // The project's own config, with its self-test samples, loads.
    let o = cordon_in(&project, &["check-config", "--config", "cordon.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("demo-engine 0.1.0"), "{}", stdout(&o));

    // A name cordon could not use is refused before anything is written.
    let o = cordon(&[
        "engine",
        "new",
        "Bad Name",
        "--lang",
        "rust",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("lower case letters"), "{}", stderr(&o));
}

/// `cordon engine new --lang LANG` for a language whose toolchain turns a
/// script into a component (`build.sh` honours `env` naming the tool
/// `./dev test` installed, pinned as `dev` pins it as `pin_var`): the
/// project builds outside the repository and passes the suite.
fn template_builds_and_passes(lang: &str, name: &str, env: &str, tool: &str, pin_var: &str) {
    let tool = root().join(tool);
    assert!(
        tool.is_file(),
        "{} missing: ./dev test installs it",
        tool.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let o = cordon(&[
        "engine",
        "new",
        name,
        "--lang",
        lang,
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let project = dir.path().join(name);
    // The project installs the toolchain that ./dev pins.
    let dev = std::fs::read_to_string(root().join("dev")).unwrap();
    let pin = dev
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{pin_var}=")))
        .unwrap_or_else(|| panic!("dev pins {pin_var}"))
        .trim_matches(|c| "()\"".contains(c));
    let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
    assert!(build.contains(pin), "{pin} not in build.sh:\n{build}");

    let built = std::process::Command::new("./build.sh")
        .current_dir(&project)
        .env(env, &tool)
        .output()
        .expect("running build.sh");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    passes_the_suite(&project, name);
}

/// `cordon engine test` on the component `NAME.wasm` a template project
/// built, with the project's samples: every check passes.
fn passes_the_suite(project: &std::path::Path, name: &str) {
    let wasm = project.join(format!("{name}.wasm"));
    let prefix = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
    let sample = |file: &str, expect: &str| {
        format!("{}={expect}", project.join("samples").join(file).display())
    };
    let o = cordon(&[
        "engine",
        "test",
        wasm.to_str().unwrap(),
        "--sample",
        &sample("eicar.eml", &format!("{prefix}.Eicar")),
        "--sample",
        &sample("gtube.eml", &format!("{prefix}.Gtube")),
        "--sample",
        &sample("clean.eml", "clean"),
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(out.contains("8 passed, 0 failed"), "{out}");
}

#[test]
fn the_python_template_builds_outside_the_repository_and_passes_the_suite() {
    template_builds_and_passes(
        "python",
        "py-demo",
        "COMPONENTIZE_PY",
        "target/pyenv/bin/componentize-py",
        "COMPONENTIZE_PY",
    );
}

#[test]
fn the_javascript_template_builds_outside_the_repository_and_passes_the_suite() {
    template_builds_and_passes(
        "js",
        "js-demo",
        "COMPONENTIZE_JS",
        "target/jsenv/node_modules/.bin/componentize-js",
        "COMPONENTIZE_JS",
    );
}

/// The C template: Debian's clang and wasi-libc build the core module with
/// the bindings cordon generated, `cordon engine componentize` makes the
/// component, and it passes the suite and its own config's self-test.
#[test]
fn the_c_template_builds_outside_the_repository_and_passes_the_suite() {
    let clang = std::process::Command::new("clang")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        clang && std::path::Path::new("/usr/lib/wasm32-wasi/libc.a").is_file(),
        "clang or wasi-libc is missing: ./dev test installs clang lld wasi-libc libclang-rt-14-dev-wasm32"
    );
    let dir = tempfile::tempdir().unwrap();
    let o = cordon(&[
        "engine",
        "new",
        "c-demo",
        "--lang",
        "c",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let project = dir.path().join("c-demo");
    for f in [
        "engine.c",
        "bindings/scanner.h",
        "bindings/scanner.c",
        "bindings/scanner_component_type.o",
        "wit/scanner.wit",
    ] {
        assert!(project.join(f).is_file(), "{f} missing");
    }
    let built = std::process::Command::new("./build.sh")
        .current_dir(&project)
        .env("CORDON", env!("CARGO_BIN_EXE_cordon"))
        .output()
        .expect("running build.sh");
    assert!(
        built.status.success(),
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    passes_the_suite(&project, "c-demo");
    // Its own config loads it, self-tests and all.
    let o = cordon_in(&project, &["check-config", "--config", "cordon.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// `cordon engine componentize` refuses what it cannot make a component
/// of, saying why.
#[test]
fn componentize_refuses_what_is_not_a_core_module_with_a_world() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "text.wasm",
            b"not wasm at all".to_vec(),
            "not a WebAssembly module",
        ),
        (
            "component.wasm",
            std::fs::read(component("testsig")).unwrap(),
            "already a component",
        ),
        (
            "bare.wasm",
            wat::parse_str("(module (func (export \"f\")))").unwrap(),
            "link the bindings' *_component_type.o",
        ),
    ];
    for (file, bytes, want) in cases {
        let input = dir.path().join(file);
        std::fs::write(&input, bytes).unwrap();
        let out = dir.path().join("out.wasm");
        let o = cordon(&[
            "engine",
            "componentize",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_ne!(o.status.code(), Some(0), "{file}");
        let err = stderr(&o);
        assert!(err.contains(want), "{file}: {err}");
        assert!(err.contains(file), "{file}: {err}");
        assert!(!out.exists(), "{file}: nothing written");
    }
}

/// `cordon learn` hands each message to the engines' `learn` and prints
/// what each answered; an engine's refusal or fault is an error line and
/// exit 2.
#[test]
fn learn_reports_each_engines_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = |mode: &str| {
        write_config(
            dir.path(),
            &format!(
                "cache_dir = {}\n[engines.testsig]\ncomponent = {}\n\
                 [engines.old]\ncomponent = {}\n\
                 [engines.hostile]\ncomponent = {}\nsettings.mode = \"{mode}\"\n",
                toml_path(&cache_dir()),
                toml_path(&component("testsig")),
                toml_path(&root().join("tests/fixtures/engines/testsig-0.1.0.wasm")),
                toml_path(&component("hostile")),
            ),
        )
    };
    let cfg = config("learn");
    let cfg = cfg.to_str().unwrap();
    let o = cordon(&[
        "learn",
        "--config",
        cfg,
        "--class",
        "spam",
        "samples/gtube.eml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    for line in [
        "samples/gtube.eml: hostile learned",
        "samples/gtube.eml: old unsupported",
        "samples/gtube.eml: testsig unsupported",
    ] {
        assert!(out.lines().any(|l| l == line), "{line}: {out}");
    }
    // Only the engine asked for; an mbox is each of its messages.
    let o = cordon(&[
        "learn",
        "--config",
        cfg,
        "--engine",
        "hostile",
        "--class",
        "ham",
        "samples/inbox.mbox",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines().all(|l| l.contains(": hostile learned")),
        "{out}"
    );
    assert!(
        out.contains("samples/inbox.mbox[2]: hostile learned"),
        "{out}"
    );

    let o = cordon(&[
        "learn",
        "--config",
        cfg,
        "--engine",
        "nosuch",
        "--class",
        "ham",
        "samples/clean.eml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("\"nosuch\": no enabled engine of that name"),
        "{}",
        stderr(&o)
    );

    for (mode, want) in [
        (
            "learn-refuses",
            "hostile ERROR the engine refused: hostile refuses to learn\\x1b[2J",
        ),
        ("panic", "hostile ERROR trap"),
    ] {
        let cfg = config(mode);
        let o = cordon(&[
            "learn",
            "--config",
            cfg.to_str().unwrap(),
            "--engine",
            "hostile",
            "--class",
            "virus",
            "samples/eicar.eml",
        ]);
        assert_eq!(o.status.code(), Some(2), "{mode}");
        assert!(stdout(&o).contains(want), "{mode}: {}", stdout(&o));
    }
}
