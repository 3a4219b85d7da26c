//! What the runtime needs to load one engine: its files, settings,
//! limits and self-test samples, as `config` validated them, and a
//! fingerprint of its files for the watcher.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;

/// Validated per-engine limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineLimits {
    /// Wall-clock time one call may take; enforced by epoch interruption.
    pub timeout: Duration,
    /// Bytes of linear memory (all memories together) one instance may hold.
    pub memory_bytes: u64,
    /// Larger messages are not handed to the engine: the outcome is a
    /// `message-too-large` fault.
    pub max_message_bytes: u64,
    /// Scans running at once.
    pub max_concurrency: u32,
    /// Bounds on the verdict.
    pub verdict: VerdictLimits,
    /// Largest component file read.
    pub max_component_bytes: u64,
    /// Wall-clock time `init` may take.
    pub init_timeout: Duration,
    /// Bytes of definitions files together.
    pub max_definitions_bytes: u64,
    /// Wall-clock time one compile may take.
    pub compile_timeout: Duration,
    /// Address space of the compiler child.
    pub compile_memory_bytes: u64,
}

/// Bounds on what one verdict may carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictLimits {
    /// Threats.
    pub max_threats: u32,
    /// Rules fired.
    pub max_rules: u32,
    /// Proposed headers.
    pub max_headers: u32,
    /// Per-recipient verdicts.
    pub max_recipient_verdicts: u32,
    /// Bytes in any one string.
    pub max_string_bytes: u32,
    /// Bytes of the whole verdict: every string, plus
    /// [`VERDICT_ITEM_BYTES`] for each list item.
    pub max_verdict_bytes: u64,
}

/// What each list item of a verdict counts towards `max_verdict_bytes`
/// besides its strings: the host's own record of it.
pub const VERDICT_ITEM_BYTES: u64 = 32;

impl Default for EngineLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            memory_bytes: 256 * MIB,
            max_message_bytes: 50 * MIB,
            max_concurrency: 4,
            verdict: VerdictLimits {
                max_threats: 64,
                max_rules: 256,
                max_headers: 16,
                max_recipient_verdicts: 1000,
                max_string_bytes: 1024,
                max_verdict_bytes: MIB,
            },
            max_component_bytes: 256 * MIB,
            init_timeout: Duration::from_secs(60),
            max_definitions_bytes: 4096 * MIB,
            compile_timeout: Duration::from_secs(120),
            compile_memory_bytes: 8192 * MIB,
        }
    }
}

/// A self-test sample, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfTest {
    /// The file it came from.
    pub file: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// What the engine must say.
    pub expect: Expect,
}

/// A self-test's expected outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A clean verdict.
    Clean,
    /// Any detection.
    Detected,
    /// A detection with this threat name among those found.
    Threat(String),
}

/// One engine after validation: everything the runtime needs to load it.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// The engine's name in config.
    pub name: String,
    /// The component file, absolute or relative to the working directory.
    pub component: PathBuf,
    /// Whether it scans.
    pub enabled: bool,
    /// The definitions directory, if any.
    pub definitions: Option<PathBuf>,
    /// Settings for `init`.
    pub settings: BTreeMap<String, String>,
    /// The capabilities the operator granted.
    pub capabilities: Vec<Capability>,
    /// Limits.
    pub limits: EngineLimits,
    /// Samples a new generation must pass.
    pub self_test: Vec<SelfTest>,
    /// Whether its verdicts are cached.
    pub cache: bool,
}

/// A capability an operator may grant an engine (`[engines.NAME]
/// capabilities`): an interface of the contract the host mediates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capability {
    /// DNS lookups (`cordon:scanner/dns`).
    Dns,
    /// The key-value store for learned state (`cordon:scanner/store`).
    Store,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 2] = [Capability::Dns, Capability::Store];

    /// Its name in config.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Dns => "dns",
            Capability::Store => "store",
        }
    }

    /// The capability named `name` in config.
    pub fn from_name(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The interface (without version) an engine imports to use it.
    pub fn interface(self) -> &'static str {
        match self {
            Capability::Dns => "cordon:scanner/dns",
            Capability::Store => "cordon:scanner/store",
        }
    }
}

/// What the files of one engine look like: (path, size, mtime in ns,
/// inode) for the component and every definitions file, and the
/// definitions directory's resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(Vec<(String, u64, i64, u64)>);

fn entry(path: &Path) -> (String, u64, i64, u64) {
    let name = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(m) => (
            name,
            m.len(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            m.ino(),
        ),
        Err(_) => (name, u64::MAX, -1, 0),
    }
}

/// The fingerprint of an engine's files now.
pub fn fingerprint(spec: &EngineSpec) -> Fingerprint {
    let mut v = vec![entry(&spec.component)];
    if let Some(dir) = &spec.definitions {
        let resolved = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        v.push((format!("-> {}", resolved.display()), 0, 0, 0));
        let mut files: Vec<_> = std::fs::read_dir(&resolved)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        v.extend(files.iter().map(|p| entry(p)));
    }
    Fingerprint(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_see_every_definitions_file() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("{i}.ndb")), b"x").unwrap();
        }
        let spec = EngineSpec {
            name: "e".into(),
            component: dir.path().join("missing.wasm"),
            enabled: true,
            definitions: Some(dir.path().to_path_buf()),
            settings: Default::default(),
            capabilities: Vec::new(),
            limits: Default::default(),
            self_test: vec![],
            cache: true,
        };
        let before = fingerprint(&spec);
        assert_eq!(before.0.len(), 1 + 1 + 3);
        std::fs::write(dir.path().join("1.ndb"), b"xy").unwrap();
        assert_ne!(fingerprint(&spec), before);
    }
}
