//! Reloading engines when their files change.
//!
//! Polling, not inotify: every interval the watcher takes a fingerprint of
//! each enabled engine's component file and definitions directory (size,
//! modification time and inode of every file, and where a symlinked
//! directory points), which catches every way definitions are updated:
//! writing in place, renaming a file over another, renaming or re-pointing
//! a whole directory. A change is acted on once the fingerprint has held
//! still for one interval, so a half-copied update is never loaded. A
//! reload that fails is not retried until the files change again.
//!
//! Polling costs one `stat` per file per pass, so the pause between passes
//! grows with what a pass costs: the watcher spends at most about 2% of a
//! core however many files a definitions directory holds. Each engine's
//! reload runs as a task of its own: a slow or stuck load of one engine
//! never delays noticing or loading another's update.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::engine::{Fingerprint, fingerprint};
use crate::registry::Registry;

/// The watcher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Whether to watch at all.
    pub enabled: bool,
    /// How often to look; a change is acted on once it has held still for
    /// one interval.
    pub interval: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(1),
        }
    }
}

/// Watches the registry's engines every `interval` until `stop` turns
/// true, reloading an engine whose files differ from those its last load
/// (or failed attempt) was made from, once they have held still.
pub async fn run(registry: Arc<Registry>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut pending: HashMap<String, Fingerprint> = HashMap::new();
    let reloading: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let mut pause = interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let r = registry.clone();
        let busy = reloading.clone();
        // The pass's cost is timed inside it: timed around the await, it
        // would include the wait for a blocking thread and for this task to
        // be polled again, which on a busy daemon (scans on every worker)
        // stretched the pause fifty-fold with it: a swap bench run noticed
        // a change 0.3 s late where the interval was 0.1 s.
        let (changed, cost) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let busy = busy.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let changed = r
                .engines()
                .iter()
                .filter(|s| s.enabled() && !busy.contains(&*s.name()))
                .filter_map(|s| {
                    let now = fingerprint(&s.spec());
                    (now != s.files()).then(|| (s.name().to_string(), now))
                })
                .collect::<Vec<_>>();
            (changed, started.elapsed())
        })
        .await
        .unwrap_or_default();
        pause = next_pause(interval, cost);
        pending.retain(|name, _| changed.iter().any(|(n, _)| n == name));
        for (name, fp) in changed {
            if pending.get(&name) != Some(&fp) {
                tracing::debug!(engine = %name, "files changed; waiting for them to hold still");
                pending.insert(name, fp);
                continue;
            }
            pending.remove(&name);
            tracing::info!(engine = %name, "files changed: loading a new generation");
            reloading
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone());
            let r = registry.clone();
            let busy = reloading.clone();
            tokio::task::spawn_blocking(move || {
                // Success and failure are both logged by the registry.
                let _ = r.reload(&name);
                busy.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            });
        }
    }
}

/// The pause after a pass is at least this many times what the pass took.
const PAUSE_PER_PASS: u32 = 50;

/// The pause before the next pass: the configured interval, or longer when
/// a pass costs more than 1/[`PAUSE_PER_PASS`] of it.
fn next_pause(interval: Duration, pass: Duration) -> Duration {
    interval.max(pass.saturating_mul(PAUSE_PER_PASS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_backs_off_as_passes_grow() {
        let second = Duration::from_secs(1);
        // A cheap pass: the interval holds.
        assert_eq!(next_pause(second, Duration::from_micros(200)), second);
        // 100,000 files at ~7 us a stat: 0.7 s a pass, 35 s a pause, so
        // polling stays near 2% of a core.
        let pause = next_pause(second, Duration::from_millis(700));
        assert_eq!(pause, Duration::from_secs(35));
        assert!(Duration::from_millis(700).as_secs_f64() / pause.as_secs_f64() <= 0.02);
    }
}
