//! Golden files, as mail-parser keeps them: every `tests/golden/*.eml`
//! fixture is judged two ways under `tests/golden/cordon.toml`, and each
//! result is compared whole with the expected file beside the fixture:
//!
//! - `NAME.scan.json`: the decision `cordon scan --json` prints for it;
//! - `NAME.milter`: the milter actions cordon answers end-of-message with
//!   when an MTA sends it (client 192.0.2.10, three recipients, two of
//!   them in recipient profiles).
//!
//! A mismatch writes `NAME.scan.json.failed` or `NAME.milter.failed` to
//! diff against the expected file, and fails. `CORDON_BLESS=1` writes the
//! expected files instead (review the diff before committing them). The
//! scan id and cordon's version, which change from run to run or release
//! to release, are replaced by placeholders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use miltr_common::actions::Action;
use miltr_common::modifications::{ModificationAction, ModificationResponse};

use crate::common::*;
use crate::milter::{Mail, reply, session};

fn golden_dir() -> PathBuf {
    root().join("tests/golden")
}

/// The fixtures, in name order.
fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

/// Replaces what differs between runs and releases.
fn normalize(text: &str) -> String {
    let mut out = text.replace(env!("CARGO_PKG_VERSION"), "<version>");
    // Scan ids: 16 lower-case hex digits after `id=` or `cordon `.
    for marker in ["id=", "cordon "] {
        let mut done = String::with_capacity(out.len());
        let mut rest = out.as_str();
        while let Some(at) = rest.find(marker) {
            let (head, tail) = rest.split_at(at + marker.len());
            done.push_str(head);
            let hex = tail
                .bytes()
                .take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                .count();
            if hex == 16 {
                done.push_str("<scan-id>");
                rest = &tail[16..];
            } else {
                rest = tail;
            }
        }
        done.push_str(rest);
        out = done;
    }
    out
}

/// Compares `got` with the expected file `name` in `tests/golden`; returns
/// a line for the failure report on a mismatch.
fn check(name: &str, got: &str) -> Option<String> {
    let expected = golden_dir().join(name);
    let failed = golden_dir().join(format!("{name}.failed"));
    if std::env::var_os("CORDON_BLESS").is_some() {
        std::fs::write(&expected, got).expect("writing a golden file");
        let _ = std::fs::remove_file(&failed);
        return None;
    }
    match std::fs::read_to_string(&expected) {
        Ok(want) if want == got => {
            let _ = std::fs::remove_file(&failed);
            None
        }
        Ok(_) => {
            std::fs::write(&failed, got).expect("writing a .failed file");
            Some(format!(
                "{name}: differs; diff {} {}",
                expected.display(),
                failed.display()
            ))
        }
        Err(e) => {
            std::fs::write(&failed, got).expect("writing a .failed file");
            Some(format!(
                "{name}: no expected file ({e}); what came is in {}",
                failed.display()
            ))
        }
    }
}

/// The milter response as one line per action, in the order sent.
fn render(r: &ModificationResponse) -> String {
    let mut out = String::new();
    for m in r.modifications() {
        let line = match m {
            ModificationAction::AddHeader(h) => format!("add-header {}: {}", h.name(), h.value()),
            ModificationAction::ChangeHeader(h) if h.value().is_empty() => {
                format!("remove-header {}[{}]", h.name(), h.index())
            }
            ModificationAction::ChangeHeader(h) => {
                format!("change-header {}[{}]: {}", h.name(), h.index(), h.value())
            }
            ModificationAction::AddRecipient(a) => format!("add-recipient {}", a.recipient()),
            ModificationAction::DeleteRecipient(d) => {
                format!("delete-recipient {}", d.recipient())
            }
            // miltr-common's parser keeps the wire's terminating NUL.
            ModificationAction::Quarantine(q) => {
                format!("quarantine {}", q.reason().trim_end_matches('\0'))
            }
            other => format!("{other:?}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    let last = match r.final_action() {
        Action::Continue(_) => "continue".to_string(),
        Action::Discard(_) => "discard".to_string(),
        Action::Replycode(_) => format!("reply {}", reply(r)),
        other => format!("{other:?}"),
    };
    out.push_str(&last);
    out.push('\n');
    normalize(&out)
}

/// A message's header fields as an MTA hands them to a milter (folded
/// lines joined with LF, as Postfix sends them) and its body.
fn split_message(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = match raw.find("\r\n\r\n") {
        Some(i) => (&raw[..i], raw[i + 4..].to_string()),
        None => (raw.trim_end_matches("\r\n"), String::new()),
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            fields.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    (fields, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_files_scan_and_milter() {
    let fixtures = fixtures();
    assert!(
        fixtures.len() >= 20,
        "only {} fixtures in tests/golden",
        fixtures.len()
    );
    let config_path = golden_dir().join("cordon.toml");
    let mut failures = Vec::new();
    let mut ran = 0;

    // One `cordon scan --json` over every fixture: one line per message.
    let mut args: Vec<String> = vec![
        "scan".into(),
        "--json".into(),
        "--jobs".into(),
        "1".into(),
        "--config".into(),
        config_path.display().to_string(),
    ];
    args.extend(fixtures.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = cordon(&args);
    assert!(
        matches!(o.status.code(), Some(0..=2)),
        "cordon scan: {:?}\n{}",
        o.status,
        stderr(&o)
    );
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for fixture in &fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".eml");
        let line = lines
            .iter()
            .find(|v| {
                v["type"] == "message" && Path::new(v["path"].as_str().unwrap_or("")) == fixture
            })
            .unwrap_or_else(|| panic!("no scan line for {name}:\n{}", stdout(&o)));
        let got = serde_json::to_string_pretty(&line["decision"]).expect("JSON") + "\n";
        failures.extend(check(&format!("{stem}.scan.json"), &normalize(&got)));
        ran += 1;
    }

    // The same fixtures through a milter session.
    let mut config = cordon::config::Config::load(&config_path).unwrap_or_else(|e| panic!("{e}"));
    config.registry.live.host_name = Some("mx.test".into());
    let registry = Arc::new(
        cordon::registry::Registry::load(&config.registry).unwrap_or_else(|e| panic!("{e}")),
    );
    for fixture in &fixtures {
        let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        let stem = name.trim_end_matches(".eml");
        let raw = String::from_utf8_lossy(&std::fs::read(fixture).expect("fixture")).into_owned();
        let (fields, body) = split_message(&raw);
        let headers: Vec<(&str, &str)> = fields
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let r = session(
            &registry,
            &Mail {
                client: "192.0.2.10",
                rcpts: &["<dave@in.test>", "<bob@in.test>", "<carol@alt.test>"],
                headers: &headers,
                body: &body,
            },
        )
        .await;
        failures.extend(check(&format!("{stem}.milter"), &render(&r)));
        ran += 1;
    }
    assert_eq!(ran, 2 * fixtures.len());
    assert!(
        failures.is_empty(),
        "{} of {ran} golden results differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn normalize_replaces_scan_ids_and_the_version_only() {
    let v = env!("CARGO_PKG_VERSION");
    assert_eq!(
        normalize(&format!(
            "id=0123456789abcdef; cordon {v} at mx; cordon fedcba9876543210: x; id=12"
        )),
        "id=<scan-id>; cordon <version> at mx; cordon <scan-id>: x; id=12"
    );
}
