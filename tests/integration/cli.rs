//! `cordon scan`, `cordon engines` and `cordon check-config` as an operator
//! runs them: output lines, exit codes, JSON, and errors that name things.

use crate::common::*;

#[test]
fn scan_samples_directory_prints_clamscan_lines_and_exits_1() {
    component("testsig");
    let o = cordon(&["scan", "samples"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{}", stderr(&o));
    for line in [
        "samples/clean.eml: OK",
        "samples/eicar-attachment.eml: Sample.Eicar.File.UNOFFICIAL, Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature FOUND [reject 550 5.7.1 Message rejected: Sample.Eicar.File.UNOFFICIAL, Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature found]",
        "samples/eicar.eml: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature FOUND [reject 550 5.7.1 Message rejected: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature found]",
        "samples/gtube.eml: Sample.Gtube.UNOFFICIAL, GTUBE FOUND [reject 550 5.7.1 Message rejected: Sample.Gtube.UNOFFICIAL, GTUBE found]",
        "samples/maildir/cur/1763800000.1.host:2,S: OK",
        "samples/maildir/new/1763800001.2.host: OK",
        "Scanned messages: 10",
        "Detected messages: 5",
        "Errors: 0",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing line {line:?} in:\n{out}"
        );
    }
}

#[test]
fn scan_mbox_reports_each_message() {
    component("testsig");
    let o = cordon(&["scan", "--no-summary", "samples/inbox.mbox"]);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<String> = stdout(&o).lines().map(|l| l.to_string()).collect();
    assert_eq!(
        lines,
        [
            "samples/inbox.mbox[1]: OK",
            "samples/inbox.mbox[2]: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature FOUND [reject 550 5.7.1 Message rejected: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature found]",
            "samples/inbox.mbox[3]: OK",
            "samples/inbox.mbox[4]: Sample.Gtube.UNOFFICIAL, GTUBE FOUND [reject 550 5.7.1 Message rejected: Sample.Gtube.UNOFFICIAL, GTUBE found]",
        ]
    );
}

#[test]
fn clean_input_exits_0_and_stdin_works() {
    component("testsig");
    let o = cordon(&["scan", "samples/clean.eml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cordon"))
        .args(["scan", "--no-summary", "-"])
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&message("x", eicar()))
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).starts_with("-: Sample.Eicar.UNOFFICIAL, Eicar-Test-Signature FOUND"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn json_output_parses_and_matches_the_text_output() {
    component("testsig");
    let o = cordon(&["scan", "--json", "samples"]);
    assert_eq!(o.status.code(), Some(1));
    let values: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let messages: Vec<&serde_json::Value> =
        values.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(messages.len(), 10);
    let eicar = messages
        .iter()
        .find(|v| v["path"] == "samples/eicar.eml")
        .unwrap();
    assert_eq!(eicar["decision"]["action"], "reject");
    assert_eq!(eicar["decision"]["reply"]["code"], 550);
    // Both bundled engines found it, each under its own name.
    let names: Vec<(&str, &str)> = eicar["decision"]["threats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["engine"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("clamsig", "Sample.Eicar.UNOFFICIAL"),
            ("testsig", "Eicar-Test-Signature")
        ]
    );
    assert_eq!(eicar["decision"]["threats"][0]["kind"], "virus");
    for (i, engine) in ["clamsig", "testsig"].iter().enumerate() {
        assert_eq!(eicar["engines"][i]["engine"], *engine);
        assert_eq!(eicar["engines"][i]["outcome"], "detected");
    }
    // The base64 attachment is found in its decoded part, and says where.
    let attached = messages
        .iter()
        .find(|v| v["path"] == "samples/eicar-attachment.eml")
        .unwrap();
    let by_testsig = attached["decision"]["threats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["engine"] == "testsig")
        .unwrap();
    assert_eq!(by_testsig["part"], "part 1 (invoice.com)");
    let gtube = messages
        .iter()
        .find(|v| v["path"] == "samples/gtube.eml")
        .unwrap();
    assert_eq!(gtube["decision"]["spam_score"], 1000.0);
    let gtube_by_testsig = gtube["decision"]["threats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["engine"] == "testsig")
        .unwrap();
    assert_eq!(gtube_by_testsig["kind"], "spam");
    let summary = values.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["messages"], 10);
    assert_eq!(summary["detected"], 5);
    assert_eq!(summary["errors"], 0);
}

#[test]
fn unreadable_input_is_an_error_naming_the_file_and_others_still_scan() {
    component("testsig");
    let o = cordon(&[
        "scan",
        "--no-summary",
        "samples/clean.eml",
        "samples/no-such.eml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let out = stdout(&o);
    assert!(out.contains("samples/clean.eml: OK"), "{out}");
    assert!(
        out.contains("samples/no-such.eml: ERROR cannot read samples/no-such.eml"),
        "{out}"
    );
}

#[test]
fn bad_config_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "[engines.testsig]\ncomponent = \"x.wasm\"\nlimits.timeout_ms = 0\n",
    );
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");
    assert!(err.contains("engines.testsig.limits.timeout_ms"), "{err}");
    assert!(err.contains("out of range"), "{err}");

    let cfg = write_config(
        dir.path(),
        "[engines.t]\ncomponent = \"x.wasm\"\ntimout_ms = 5\n",
    );
    let o = cordon(&["scan", "--config", cfg.to_str().unwrap(), "samples"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("unknown field `timout_ms`"), "{err}");
    assert!(err.contains(cfg.to_str().unwrap()), "{err}");

    let cfg = write_config(dir.path(), "[engines.t]\ncomponent = \"missing.wasm\"\n");
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("engine t: cannot read component"), "{err}");
    assert!(err.contains("missing.wasm"), "{err}");
}

#[test]
fn engines_and_check_config_show_identity_and_limits() {
    let testsig = component("testsig");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.av]\ncomponent = {}\nsettings.definitions_version = \"2026-11-22.1\"\n\
             limits.timeout_ms = 1500\nlimits.memory_mib = 32\nlimits.max_concurrency = 3\n",
            toml_path(&cache_dir()),
            toml_path(&testsig)
        ),
    );
    let o = cordon(&["engines", "--json", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &v[0];
    assert_eq!(e["engine"], "av");
    assert_eq!(e["name"], "testsig");
    assert_eq!(e["vendor"], "cordon");
    assert_eq!(e["definitions_version"], "2026-11-22.1");
    assert_eq!(e["limits"]["timeout_ms"], 1500);
    assert_eq!(e["limits"]["memory_mib"], 32);
    assert_eq!(e["limits"]["max_concurrency"], 3);

    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("OK, 1 engine(s): testsig"),
        "{}",
        stdout(&o)
    );

    // An engine that rejects its settings fails check-config with its reason.
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.av]\ncomponent = {}\nsettings.colour = \"blue\"\n",
            toml_path(&cache_dir()),
            toml_path(&testsig)
        ),
    );
    let o = cordon(&["check-config", "--config", cfg.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("engine av"), "{err}");
    assert!(
        err.contains("init failed: unknown setting `colour`"),
        "{err}"
    );
}

#[test]
fn engine_flag_scans_without_a_config() {
    let testsig = component("testsig");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.eml"), message("x", eicar())).unwrap();
    let o = cordon_in(
        dir.path(),
        &[
            "scan",
            "--no-summary",
            "--engine",
            testsig.to_str().unwrap(),
            "m.eml",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("m.eml: Eicar-Test-Signature FOUND"));

    // Without --engine or a config file to find, the error says where it looked.
    let o = cordon_in(dir.path(), &["scan", "m.eml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no config file"), "{}", stderr(&o));
}

/// `--setting` and `--definitions` configure the engines given with
/// `--engine`, as `[engines.NAME]` would.
#[test]
fn engine_flag_takes_settings_and_definitions() {
    let clamsig = component("clamsig");
    let clamsig = clamsig.to_str().unwrap();
    // clamsig refuses to start without definitions; with the sample ones
    // it finds their EICAR signature.
    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        clamsig,
        "samples/eicar.eml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        clamsig,
        "--definitions",
        "engines/clamsig/definitions",
        "samples/eicar.eml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Sample.Eicar.UNOFFICIAL"),
        "{}",
        stdout(&o)
    );

    // The hostile engine does what its `mode` setting says.
    let hostile = component("hostile");
    let o = cordon(&[
        "scan",
        "--no-summary",
        "--engine",
        hostile.to_str().unwrap(),
        "--setting",
        "mode=envelope",
        "samples/clean.eml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("Envelope.from[].to[]"),
        "{}",
        stdout(&o)
    );

    let o = cordon(&[
        "scan",
        "--engine",
        hostile.to_str().unwrap(),
        "--setting",
        "mode",
        "samples/clean.eml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected KEY=VALUE"), "{}", stderr(&o));
}

#[test]
fn message_over_the_size_limit_is_not_scanned_and_is_deferred() {
    let testsig = component("testsig");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\n[engines.av]\ncomponent = {}\nlimits.max_message_bytes = 100\n",
            toml_path(&cache_dir()),
            toml_path(&testsig)
        ),
    );
    let mail = dir.path().join("mail");
    std::fs::create_dir(&mail).unwrap();
    let big = message("big", &"x".repeat(200));
    std::fs::write(mail.join("big.eml"), &big).unwrap();
    std::fs::write(mail.join("small.eml"), b"Subject: s\r\n\r\nhi\r\n").unwrap();
    let o = cordon_in(
        dir.path(),
        &[
            "scan",
            "--no-summary",
            "--config",
            cfg.to_str().unwrap(),
            "mail",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = stdout(&o);
    let want = format!(
        "mail/big.eml: ERROR av message-too-large: message is {} bytes, \
         over the engine's max_message_bytes of 100 [tempfail 451 4.7.1",
        big.len()
    );
    assert!(out.contains(&want), "{out}");
    assert!(out.contains("mail/small.eml: OK"), "{out}");
}

#[test]
fn mime_limits_exceeded_is_unscannable_and_deferred() {
    let testsig = component("testsig");
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &format!(
            "cache_dir = {}\nmime.max_parts = 1\n[engines.av]\ncomponent = {}\n",
            toml_path(&cache_dir()),
            toml_path(&testsig)
        ),
    );
    let o = cordon(&[
        "scan",
        "--json",
        "--config",
        cfg.to_str().unwrap(),
        "samples/eicar-attachment.eml",
        "samples/clean.eml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Two parts, limit one: the attachment is never decoded, so the engine's
    // clean word on the rest cannot stand.
    assert_eq!(lines[0]["engines"][0]["outcome"], "unscannable");
    assert_eq!(lines[0]["decision"]["action"], "tempfail");
    assert_eq!(
        lines[0]["decision"]["failures"][0]["kind"],
        "unscannable:limits-exceeded"
    );
    // A single-part message is within the limit.
    assert_eq!(lines[1]["decision"]["action"], "accept");
}

/// The README's demo output, line for line, against what `./dev demo` runs
/// (`cordon engines`, then `cordon scan samples/`, with the repository's
/// `cordon.toml`): a line added, dropped or changed on either side fails.
/// Only the figures of the `Time:` and `Peak memory:` lines may differ.
#[test]
fn readme_demo_output_is_what_dev_demo_prints() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let marker = "`./dev demo` prints";
    let after = &readme[readme.find(marker).expect("the README's demo section")..];
    let block = after
        .split("```\n")
        .nth(1)
        .expect("a fenced block after the demo marker");
    let dev = std::fs::read_to_string(root().join("dev")).expect("dev");
    assert!(
        dev.contains("./target/release/cordon engines")
            && dev.contains("./target/release/cordon scan samples/"),
        "./dev demo no longer runs what this test runs"
    );
    let engines = cordon(&["engines"]);
    assert_eq!(engines.status.code(), Some(0), "{}", stderr(&engines));
    let scan = cordon(&["scan", "samples/"]);
    assert_eq!(scan.status.code(), Some(1), "{}", stderr(&scan));
    let printed = format!("{}{}", stdout(&engines), stdout(&scan));
    let figures_out = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| match l.split_once(": ") {
                Some((k @ ("Time" | "Peak memory"), _)) => format!("{k}: <varies>"),
                _ => l.to_string(),
            })
            .collect()
    };
    assert_eq!(figures_out(block), figures_out(&printed));
}
