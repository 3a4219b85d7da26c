//! clamsig: a cordon engine that reads ClamAV signature databases.
//!
//! The signature work is plain Rust, testable natively and linked natively
//! by the benchmark: [`pattern`] (body patterns), [`logical`] (.ldb
//! expressions), [`db`] (loading the files), [`scanner`] (matching). The
//! component glue at the bottom, compiled only for wasm, reads every file in
//! `/definitions` during `init` and maps what ClamAV would scan in a message
//! onto the host's `scan` (the raw message) and `scan-part` (each decoded
//! part) calls.

pub mod archive;
pub mod db;
pub mod formats;
pub mod logical;
pub mod offset;
pub mod pattern;
pub mod pcre;
pub mod scanner;

use archive::{Budget, Limits, Stop};
use scanner::{Matcher, Targets, looks_like_html, looks_textual, normalise_text, text_as_hashed};

/// A threat found in a part, with where inside the part (an archive member
/// path, `a.zip > inner.tar > x.exe`; empty for the part itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The threat name, as clamscan prints it.
    pub name: String,
    /// The path inside the part.
    pub path: String,
}

/// What scanning one decoded part found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartResult {
    /// Threats, one per name, in the order found.
    pub found: Vec<Found>,
    /// Why archive extraction stopped early, if it did.
    pub stop: Option<Stop>,
}

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

/// Scans one decoded part as clamscan treats the parts it decodes
/// (observed with ClamAV 1.4):
/// - text parts are hashed and matched as clamscan writes them (LF line
///   ends, a final LF), so that hashes and offsets from the end agree;
/// - plain text is matched as written (target 0) and as normalised text
///   (targets 0 and 7);
/// - HTML (by content type or by content) is matched only as normalised
///   text (targets 0 and 3), never as the decoded bytes, and the files in
///   its data URIs are opened;
/// - a part whose content is text, whatever its declared type, is matched
///   as plain text (clamscan types files by content);
/// - an embedded message (declared, or mail by content) gets the mail
///   target (4); the host opens its parts;
/// - an executable gets the executable target (1), its section hashes and
///   its PE-relative offsets;
/// - anything else is hashed and matched as it is (target 0), and if it is
///   a container, so is each member, typed by its content in turn,
///   recursively, within `limits`.
pub fn scan_decoded(m: &Matcher, content_type: &str, content: &[u8], limits: Limits) -> PartResult {
    let mime_text = content_type.starts_with("text/");
    let hashed = if mime_text {
        text_as_hashed(content)
    } else {
        content.to_vec()
    };
    let mut result = PartResult::default();
    if m.allowed(&hashed) {
        return result;
    }
    let mut names = m.hash_matches(&hashed);
    // Mail in a part (declared so, or by content) is opened by the host,
    // which walks its parts; here it gets the mail target, as clamscan
    // gives embedded messages.
    let typed = archive::kind(content);
    let mail = content_type == "message/rfc822" || typed == Some(archive::Kind::Mail);
    let kind = typed.filter(|k| *k != archive::Kind::Mail);
    // Typed by content first: a container is never HTML, whatever it holds
    // or is declared as.
    let html = !mail && kind.is_none() && (content_type == "text/html" || looks_like_html(content));
    let text = !mail && (mime_text || html || looks_textual(content));
    // A text part is matched as clamscan writes it out: LF line ends and
    // a final LF, so that offsets from the end agree.
    let written = if mime_text { &hashed[..] } else { content };
    if mail {
        names.extend(m.body_matches(content, targets_of(Some(archive::Kind::Mail), None)));
    } else if !html {
        names.extend(raw_matches(m, written, kind, None));
    }
    if text {
        let class = if html { 3 } else { 7 };
        names.extend(m.body_matches(&normalise_text(content), Targets::of(&[0, class])));
    }
    let mut found: Vec<Found> = names
        .into_iter()
        .map(|name| Found {
            name,
            path: String::new(),
        })
        .collect();
    if html || kind.is_some() {
        let mut budget = Budget::new(limits);
        let html = html && kind.is_none();
        result.stop = scan_members(m, content, html, "", 1, &mut budget, &mut found).err();
    }
    let kept = m.finish(found.iter().map(|f| f.name.clone()).collect());
    for name in kept {
        if let Some(f) = found.iter().find(|f| f.name == name) {
            result.found.push(f.clone());
        }
    }
    result
}

/// The targets that apply to an object's bytes as they are: executables,
/// mail and what an OLE2 file holds have their own, besides "any file" (0).
fn targets_of(kind: Option<archive::Kind>, parent: Option<archive::Kind>) -> Targets {
    match (kind, parent) {
        (Some(archive::Kind::Pe), _) => Targets::of(&[0, 1]),
        (Some(archive::Kind::Mail), _) => Targets::of(&[0, 4]),
        (_, Some(archive::Kind::Ole2)) => Targets::of(&[0, 2]),
        _ => Targets::of(&[0]),
    }
}

/// The signatures matching an object's bytes as they are: for an
/// executable, also its section hashes and the PE-relative offsets.
fn raw_matches(
    m: &Matcher,
    content: &[u8],
    kind: Option<archive::Kind>,
    parent: Option<archive::Kind>,
) -> Vec<String> {
    let targets = targets_of(kind, parent);
    match kind.and_then(|k| (k == archive::Kind::Pe).then(|| formats::pe::layout(content))) {
        Some(Some(layout)) => {
            let mut names = m.section_matches(content, &layout);
            names.extend(m.body_matches_in(content, targets, Some(&layout)));
            names
        }
        _ => m.body_matches(content, targets),
    }
}

/// Scans the members of `data` (a container, or HTML with embedded data),
/// recursively; every member is scanned even when one stops early, and the
/// first stop is returned.
fn scan_members(
    m: &Matcher,
    data: &[u8],
    html: bool,
    prefix: &str,
    depth: u32,
    budget: &mut Budget,
    found: &mut Vec<Found>,
) -> Result<(), Stop> {
    let (members, mut stop) = if html {
        (formats::html::data_uris(data, budget), None)
    } else {
        archive::members(data, budget)
    };
    if members.is_empty() {
        return stop.map_or(Ok(()), Err);
    }
    if depth > budget.limits().max_depth {
        return Err(Stop::Limits(format!(
            "containers nested deeper than {} at {prefix}",
            budget.limits().max_depth
        )));
    }
    let parent = if html { None } else { archive::kind(data) };
    for (name, content) in members {
        let path = format!("{prefix}{name}");
        if let Err(s) = scan_member(m, &path, &content, parent, depth, budget, found) {
            stop.get_or_insert(s);
        }
    }
    stop.map_or(Ok(()), Err)
}

/// Scans one member, typed by its content as clamscan types files: text is
/// also matched normalised, HTML only normalised (and its embedded data
/// opened), executables with the executable target too; containers are
/// opened.
fn scan_member(
    m: &Matcher,
    path: &str,
    content: &[u8],
    parent: Option<archive::Kind>,
    depth: u32,
    budget: &mut Budget,
    found: &mut Vec<Found>,
) -> Result<(), Stop> {
    if m.allowed(content) {
        return Ok(());
    }
    let mut names = m.hash_matches(content);
    let kind = archive::kind(content);
    let text = kind.is_none() && looks_textual(content);
    let html = text && looks_like_html(content);
    if !html {
        names.extend(raw_matches(m, content, kind, parent));
    }
    if text {
        let class = if html { 3 } else { 7 };
        names.extend(m.body_matches(&normalise_text(content), Targets::of(&[0, class])));
    }
    found.extend(names.into_iter().map(|n| Found {
        name: n,
        path: path.to_string(),
    }));
    if html || kind.is_some() {
        scan_members(
            m,
            content,
            html,
            &format!("{path} > "),
            depth + 1,
            budget,
            found,
        )?;
    }
    Ok(())
}

#[cfg(target_family = "wasm")]
mod component {
    use cordon_engine_sdk::{
        Engine, Envelope, Level, PartInfo, Settings, Threat, ThreatKind, UnscannableReason,
        Verdict, export_engine, log,
    };

    use crate::archive::{Limits, Stop};

    use crate::db::Db;
    use crate::scanner::Matcher;

    struct Clamsig {
        matcher: Matcher,
        version: String,
        limits: Limits,
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
            let mut limits = Limits::default();
            let number = |k: &str, v: &str| {
                v.parse::<usize>()
                    .map_err(|_| format!("setting `{k}`: {v:?} is not a whole number"))
            };
            for (k, v) in settings {
                match k.as_str() {
                    "definitions_version" => version = Some(v.clone()),
                    "archive_max_depth" => limits.max_depth = number(k, v)? as u32,
                    "archive_max_member_bytes" => limits.max_member_bytes = number(k, v)?,
                    "archive_max_total_bytes" => limits.max_total_bytes = number(k, v)?,
                    "archive_max_ratio" => limits.max_ratio = number(k, v)?,
                    "archive_max_members" => limits.max_members = number(k, v)?,
                    other => {
                        return Err(format!(
                            "unknown setting `{other}` (clamsig knows: definitions_version, archive_max_depth, archive_max_member_bytes, archive_max_total_bytes, archive_max_ratio, archive_max_members)"
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
            // First, so that they sit low in the heap, and in proportion to
            // what is read (see `Pieces`).
            let bytes: u64 = files
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum();
            let mut pieces = crate::db::Pieces::for_total(bytes);
            let mut db = Db::default();
            // The tables sized for every file at once (see `Db::add_read`).
            let mut lines: Vec<(String, usize)> = Vec::new();
            for path in &files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
                let Some(ext) = ext.filter(|e| crate::db::sized_up_front(e)) else {
                    continue;
                };
                let n = std::fs::File::open(path)
                    .and_then(|mut f| pieces.count_lines(&mut f))
                    .map_err(|e| format!("/definitions/{name}: cannot read: {e}"))?;
                match lines.iter_mut().find(|(e, _)| *e == ext) {
                    Some((_, total)) => *total += n,
                    None => lines.push((ext, n)),
                }
            }
            for (ext, n) in &lines {
                db.reserve_for(ext, *n);
            }
            let mut containers = Vec::new();
            for path in &files {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // Errors name the file by its path in the sandbox; the host
                // shows the operator's path instead.
                let in_dir = |e: String| format!("/definitions/{e}");
                if name.ends_with(".cvd") || name.ends_with(".cld") {
                    let mut bytes = std::fs::read(path)
                        .map_err(|e| in_dir(format!("{name}: cannot read: {e}")))?;
                    let v = db.add_container(&name, &bytes).map_err(in_dir)?;
                    containers.push(format!(
                        "{} {v}",
                        name.trim_end_matches(".cvd").trim_end_matches(".cld")
                    ));
                    // Or the file stays in every instance's image as garbage.
                    crate::db::zero(&mut bytes);
                } else {
                    let file = std::fs::File::open(path)
                        .map_err(|e| in_dir(format!("{name}: cannot read: {e}")))?;
                    db.add_read(&name, file, &mut pieces).map_err(in_dir)?;
                }
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
            drop(pieces);
            let matcher = Matcher::new(db)?;
            Ok(Clamsig {
                matcher,
                version: version.unwrap_or_else(|| {
                    if containers.is_empty() {
                        format!("{count} signatures")
                    } else {
                        format!("{}, {count} signatures", containers.join(", "))
                    }
                }),
                limits,
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
            let r = crate::scan_decoded(&self.matcher, &part.content_type, content, self.limits);
            if r.found.is_empty() {
                let Some(stop) = r.stop else {
                    return Verdict::clean();
                };
                log(Level::Info, &format!("{location}: {stop}"));
                return Verdict::unscannable(match stop {
                    Stop::Limits(_) => UnscannableReason::LimitsExceeded,
                    Stop::Encrypted(_) => UnscannableReason::Encrypted,
                    Stop::Unsupported(_) => UnscannableReason::Unsupported,
                    Stop::Corrupt(_) => UnscannableReason::Corrupt,
                });
            }
            Verdict::detected(
                r.found
                    .into_iter()
                    .map(|f| Threat {
                        name: f.name,
                        kind: ThreatKind::Virus,
                        part: if f.path.is_empty() {
                            location.clone()
                        } else {
                            format!("{location} > {}", f.path)
                        },
                    })
                    .collect(),
            )
        }
    }

    export_engine!(Clamsig);
}
