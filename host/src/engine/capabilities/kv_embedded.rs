//! The store's embedded backend: one redb file on this host, opened (and
//! locked) by one cordon process; each commit is durable before the call
//! returns.
//!
//! The file is opened on first use, not when the engines load, so that
//! `cordon check-config` or a `cordon scan` that never touches the store
//! can run beside the daemon that holds it; the daemon opens it at start
//! ([`Embedded::open_now`]), so a store it cannot use stops it there.
//!
//! A value is kept with its expiry in front of it (8 bytes, big-endian
//! seconds since the epoch, 0 for none); an expired entry reads as missing
//! and is removed when the store is next opened.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{BackendError, StoreSetupError, unix_now};
use crate::bindings::cordon::scanner::store::{IncrementEntry, SetEntry};

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("store");

/// Expired entries removed per commit when the store is opened.
const PURGE_BATCH: usize = 10_000;

/// An embedded store, opened on first use.
pub struct Embedded {
    db: std::sync::OnceLock<Database>,
    opening: std::sync::Mutex<()>,
    path: PathBuf,
}

fn backend(path: &Path) -> impl Fn(redb::Error) -> BackendError + '_ {
    move |e| BackendError(format!("{}: {e}", path.display()))
}

/// The value in `raw` unless it has expired at `now`, and its expiry.
fn live(raw: &[u8], now: u64) -> Option<(&[u8], u64)> {
    let (head, value) = raw.split_first_chunk::<8>()?;
    let expires = u64::from_be_bytes(*head);
    (expires == 0 || expires > now).then_some((value, expires))
}

fn encode(value: &[u8], expires: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// When an entry given `seconds` to live expires (at least one second
/// from now).
fn expiry(seconds: u32, now: u64) -> u64 {
    now + u64::from(seconds.max(1))
}

/// Removes expired entries, a batch per commit.
fn purge(db: &Database, path: &Path) -> Result<(), BackendError> {
    let err = backend(path);
    loop {
        let now = unix_now();
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        let removed = {
            let mut table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
            let expired: Vec<Vec<u8>> = table
                .iter()
                .map_err(|e| err(e.into()))?
                .filter_map(Result::ok)
                .filter(|(_, v)| live(v.value(), now).is_none())
                .take(PURGE_BATCH)
                .map(|(k, _)| k.value().to_vec())
                .collect();
            for k in &expired {
                table.remove(k.as_slice()).map_err(|e| err(e.into()))?;
            }
            expired.len()
        };
        txn.commit().map_err(|e| err(e.into()))?;
        if removed < PURGE_BATCH {
            return Ok(());
        }
    }
}

impl Embedded {
    /// The store at `path`, not opened yet.
    pub fn new(path: &Path) -> Self {
        Self {
            db: std::sync::OnceLock::new(),
            opening: std::sync::Mutex::new(()),
            path: path.to_path_buf(),
        }
    }

    /// The database, opened now if it is not yet (a failure is tried
    /// again on the next call).
    fn db(&self) -> Result<&Database, BackendError> {
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let _one = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = self.db.get() {
            return Ok(db);
        }
        let db = Self::open(&self.path).map_err(|e| BackendError(e.0))?;
        Ok(self.db.get_or_init(|| db))
    }

    /// Opens the database now, or says why it cannot be.
    pub fn open_now(&self) -> Result<(), StoreSetupError> {
        self.db().map(|_| ()).map_err(|e| StoreSetupError(e.0))
    }

    /// Opens (creating) the database at `path`, its directory private, and
    /// removes the entries that have expired.
    fn open(path: &Path) -> Result<Database, StoreSetupError> {
        let setup = |why: String| StoreSetupError(format!("{}: {why}", path.display()));
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(|e| setup(e.to_string()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| setup(e.to_string()))?;
        }
        let db = Database::create(path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => setup(
                "open in another process (is `cordon serve` running? `cordon learn --daemon` \
                 learns through it; processes share a store with backend = \"redis\")"
                    .into(),
            ),
            other => setup(other.to_string()),
        })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| setup(e.to_string()))?;
        purge(&db, path).map_err(|e| setup(e.0))?;
        Ok(db)
    }

    /// The values of `keys`.
    pub fn get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        let err = backend(&self.path);
        let now = unix_now();
        let txn = self.db()?.begin_read().map_err(|e| err(e.into()))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(e) => return Err(err(e.into())),
        };
        keys.iter()
            .map(|k| {
                let got = table.get(k.as_slice()).map_err(|e| err(e.into()))?;
                Ok(got.and_then(|g| live(g.value(), now).map(|(v, _)| v.to_vec())))
            })
            .collect()
    }

    /// Sets every entry, in one commit.
    pub fn set(&self, entries: &[SetEntry]) -> Result<(), BackendError> {
        let err = backend(&self.path);
        let now = unix_now();
        let txn = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
            for e in entries {
                let expires = e.expire_seconds.map_or(0, |s| expiry(s, now));
                table
                    .insert(e.key.as_slice(), encode(&e.value, expires).as_slice())
                    .map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))
    }

    /// Adds to every counter, in one commit; the inner error (nothing
    /// changed) names a key that holds no counter or would pass i64.
    pub fn increment(
        &self,
        entries: &[IncrementEntry],
    ) -> Result<Result<Vec<i64>, String>, BackendError> {
        let err = backend(&self.path);
        let now = unix_now();
        let txn = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        let mut values = Vec::with_capacity(entries.len());
        {
            let mut table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
            for e in entries {
                let (current, expires) = {
                    let got = table.get(e.key.as_slice()).map_err(|e| err(e.into()))?;
                    match got.as_ref().and_then(|g| live(g.value(), now)) {
                        None => (0, 0),
                        Some((v, expires)) => {
                            let Some(n) = std::str::from_utf8(v)
                                .ok()
                                .and_then(|s| s.parse::<i64>().ok())
                            else {
                                drop(got);
                                drop(table);
                                let _ = txn.abort();
                                return Ok(Err("a key holds a value that is not a counter".into()));
                            };
                            (n, expires)
                        }
                    }
                };
                let Some(next) = current.checked_add(e.delta) else {
                    drop(table);
                    let _ = txn.abort();
                    return Ok(Err("a counter would pass the range of s64".into()));
                };
                let expires = e.expire_seconds.map_or(expires, |s| expiry(s, now));
                table
                    .insert(
                        e.key.as_slice(),
                        encode(next.to_string().as_bytes(), expires).as_slice(),
                    )
                    .map_err(|e| err(e.into()))?;
                values.push(next);
            }
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(Ok(values))
    }

    /// Removes `keys`, in one commit.
    pub fn delete(&self, keys: &[Vec<u8>]) -> Result<(), BackendError> {
        let err = backend(&self.path);
        let txn = self.db()?.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| err(e.into()))?;
            for k in keys {
                table.remove(k.as_slice()).map_err(|e| err(e.into()))?;
            }
        }
        txn.commit().map_err(|e| err(e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str, expire: Option<u32>) -> SetEntry {
        SetEntry {
            key: key.into(),
            value: value.into(),
            expire_seconds: expire,
        }
    }

    fn inc(key: &str, delta: i64) -> IncrementEntry {
        IncrementEntry {
            key: key.into(),
            delta,
            expire_seconds: None,
        }
    }

    #[test]
    fn values_counters_and_expiry_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/store.redb");
        {
            let db = Embedded::new(&path);
            db.open_now().unwrap();
            db.set(&[set("a", "1", None), set("gone", "x", Some(1))])
                .unwrap();
            assert_eq!(
                db.increment(&[inc("n", 5), inc("n", -2)]).unwrap().unwrap(),
                [5, 3]
            );
            // A value that is not a counter refuses the whole batch.
            assert!(db.increment(&[inc("n", 1), inc("a", 1)]).unwrap().is_ok());
            db.set(&[set("text", "abc", None)]).unwrap();
            assert!(
                db.increment(&[inc("n", 1), inc("text", 1)])
                    .unwrap()
                    .is_err()
            );
            assert!(db.increment(&[inc("n", i64::MAX)]).unwrap().is_err());
        }
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        let db = Embedded::new(&path);
        let got = db.get(&["a".into(), "n".into(), "missing".into()]).unwrap();
        assert_eq!(got, [Some(b"2".to_vec()), Some(b"4".to_vec()), None]);
        db.delete(&["a".into()]).unwrap();
        assert_eq!(db.get(&["a".into()]).unwrap(), [None]);
        // A second open of the same file in this process is refused, naming
        // what to do.
        let e = Embedded::new(&path).open_now().expect_err("locked").0;
        assert!(e.contains("redis"), "{e}");
    }

    #[test]
    fn expired_entries_read_as_missing() {
        assert_eq!(live(&encode(b"v", 0), 100), Some((&b"v"[..], 0)));
        assert_eq!(live(&encode(b"v", 101), 100), Some((&b"v"[..], 101)));
        assert_eq!(live(&encode(b"v", 100), 100), None);
        assert_eq!(live(b"short", 100), None);
    }
}
