//! clamsig: a cordon engine that reads ClamAV signature databases.
//!
//! The signature work is plain Rust, testable natively and linked natively
//! by the benchmark: [`pattern`] (body patterns), [`logical`] (.ldb
//! expressions), [`db`] (loading the files), [`scanner`] (matching). The
//! component glue at the bottom, compiled only for wasm, reads every file in
//! `/definitions` during `init` and maps what ClamAV would scan in a message
//! onto the host's `scan` (the raw message) and `scan-part` (each decoded
//! part) calls.

pub mod db;
pub mod logical;
pub mod pattern;
pub mod scanner;

use scanner::{Matcher, Targets, looks_like_html, normalise_text, text_as_hashed};

/// Threat names found in a raw message, as clamscan scans a mail file: the
/// whole file is hashed and scanned raw with target types 0 and 4.
pub fn scan_raw(m: &Matcher, message: &[u8]) -> Vec<String> {
    if m.allowed(message) {
        return Vec::new();
    }
    let mut names = m.hash_matches(message);
    names.extend(m.body_matches(message, Targets::of(&[0, 4])));
    m.finish(names)
}

/// Threat names found in one decoded part, as clamscan treats the parts it
/// decodes (observed with ClamAV 1.4):
/// - text parts are hashed as clamscan writes them (LF line ends, a final LF);
/// - plain text is matched as decoded (target 0) and as normalised text
///   (targets 0 and 7);
/// - HTML (by content type or by content) is matched only as normalised
///   text (targets 0 and 3), never as the decoded bytes;
/// - anything else is hashed and matched as it is (target 0).
pub fn scan_decoded(m: &Matcher, content_type: &str, content: &[u8]) -> Vec<String> {
    let text = content_type.starts_with("text/");
    let hashed = if text {
        text_as_hashed(content)
    } else {
        content.to_vec()
    };
    if m.allowed(&hashed) {
        return Vec::new();
    }
    let mut names = m.hash_matches(&hashed);
    let html = text && (content_type == "text/html" || looks_like_html(content));
    if !html {
        names.extend(m.body_matches(content, Targets::of(&[0])));
    }
    if text {
        let kind = if html { 3 } else { 7 };
        names.extend(m.body_matches(&normalise_text(content), Targets::of(&[0, kind])));
    }
    m.finish(names)
}

#[cfg(target_family = "wasm")]
mod component {
    use cordon_engine_sdk::{
        Engine, Envelope, Level, PartInfo, Settings, Threat, ThreatKind, Verdict, export_engine,
        log,
    };

    use crate::db::Db;
    use crate::scanner::Matcher;

    struct Clamsig {
        matcher: Matcher,
        version: String,
    }

    fn threats(names: Vec<String>, part: String) -> Verdict {
        Verdict::detected(
            names
                .into_iter()
                .map(|name| Threat {
                    name,
                    kind: ThreatKind::Virus,
                    part: part.clone(),
                })
                .collect(),
        )
    }

    impl Engine for Clamsig {
        const NAME: &'static str = "clamsig";
        const VENDOR: &'static str = "cordon";
        const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        const WANTS_PARTS: bool = true;

        fn init(settings: &Settings) -> Result<Self, String> {
            let mut version = None;
            for (k, v) in settings {
                match k.as_str() {
                    "definitions_version" => version = Some(v.clone()),
                    other => {
                        return Err(format!(
                            "unknown setting `{other}` (clamsig knows: definitions_version)"
                        ));
                    }
                }
            }
            let dir = std::fs::read_dir("/definitions")
                .map_err(|e| format!("cannot read the definitions directory: {e} (set `definitions` in the engine's config)"))?;
            let mut files: Vec<_> = dir
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            let mut db = Db::default();
            for path in &files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let bytes = std::fs::read(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
                let text = String::from_utf8_lossy(&bytes);
                db.add_file(&name, &text)?;
            }
            let count = db.signatures();
            if count == 0 {
                return Err(format!(
                    "no signatures in the definitions directory ({} files)",
                    files.len()
                ));
            }
            let stats = db.stats.clone();
            for example in &stats.skipped_examples {
                log(Level::Warn, &format!("skipped: {example}"));
            }
            log(
                Level::Info,
                &format!(
                    "loaded {count} signatures from {} files; skipped {} signatures and {} files ({})",
                    files.len(),
                    stats.skipped,
                    stats.skipped_files.len(),
                    stats.skipped_files.join(", ")
                ),
            );
            let matcher = Matcher::new(db)?;
            Ok(Clamsig {
                matcher,
                version: version.unwrap_or_else(|| format!("{count} signatures")),
            })
        }

        fn definitions_version(&self) -> String {
            self.version.clone()
        }

        fn scan(&self, _envelope: &Envelope, message: &[u8]) -> Verdict {
            threats(crate::scan_raw(&self.matcher, message), String::new())
        }

        fn scan_part(&self, _envelope: &Envelope, part: &PartInfo, content: &[u8]) -> Verdict {
            let location = match &part.file_name {
                Some(f) => format!("part {} ({f})", part.index),
                None => format!("part {}", part.index),
            };
            threats(
                crate::scan_decoded(&self.matcher, &part.content_type, content),
                location,
            )
        }
    }

    export_engine!(Clamsig);
}
