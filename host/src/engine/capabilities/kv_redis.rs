//! The store's Redis (or Valkey) backend, shared by every cordon that
//! names the same server: one connection per runtime, made on first use
//! and remade when it breaks.
//!
//! A batch is one command or one script, so it is all or none on the
//! server: `set` is one `MULTI`, `increment` one script that checks every
//! key holds a counter before it adds to any.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use super::store::{BackendError, StoreSetupError};
use crate::bindings::cordon::scanner::store::{IncrementEntry, SetEntry};

/// Checks every key before adding to any: all or none. ARGV holds each
/// key's delta and expiry (seconds, 0 for none) in turn. The answer is
/// `{0}` when a key holds something that is not a counter (nothing
/// changed), else `{1, value, ...}`.
const INCREMENT: &str = r"
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and not string.match(v, '^-?%d+$') then
    return {0}
  end
end
local out = {1}
for i = 1, #KEYS do
  out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
  local ex = tonumber(ARGV[2 * i])
  if ex > 0 then redis.call('EXPIRE', KEYS[i], ex) end
end
return out
";

/// A Redis server.
pub struct Redis {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    increment: redis::Script,
}

fn failed(e: impl std::fmt::Display) -> BackendError {
    BackendError(format!("redis: {e}"))
}

impl Redis {
    /// The server at `url`, not yet connected.
    pub fn new(url: &str) -> Result<Self, StoreSetupError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreSetupError(format!("store.url {url:?}: {e}")))?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            increment: redis::Script::new(INCREMENT),
        })
    }

    /// The connection, made on first use within `wait`.
    async fn connection(&self, wait: Duration) -> Result<ConnectionManager, BackendError> {
        let connect = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(wait.max(Duration::from_millis(100))))
                .set_number_of_retries(1);
            ConnectionManager::new_with_config(self.client.clone(), config).await
        };
        let c = tokio::time::timeout(wait, self.connection.get_or_try_init(|| connect))
            .await
            .map_err(|_| BackendError("redis: no connection in time".into()))?
            .map_err(failed)?;
        Ok(c.clone())
    }

    /// Runs `cmd` within `wait`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        wait: Duration,
        f: impl AsyncFnOnce(&mut ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, BackendError> {
        let mut c = self.connection(wait).await?;
        tokio::time::timeout(wait, f(&mut c))
            .await
            .map_err(|_| BackendError("redis: no answer in time".into()))?
            .map_err(failed)
    }

    /// The values of `keys`.
    pub async fn get(
        &self,
        keys: Vec<Vec<u8>>,
        wait: Duration,
    ) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.run(wait, async |c| {
            redis::cmd("MGET").arg(&keys).query_async(c).await
        })
        .await
    }

    /// Sets every entry, in one transaction.
    pub async fn set(&self, entries: Vec<SetEntry>, wait: Duration) -> Result<(), BackendError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for e in &entries {
            let cmd = pipe.cmd("SET").arg(&e.key).arg(&e.value);
            if let Some(s) = e.expire_seconds {
                cmd.arg("EX").arg(s.max(1));
            }
            cmd.ignore();
        }
        self.run(wait, async |c| pipe.query_async::<()>(c).await)
            .await
    }

    /// Adds to every counter, all or none; the inner error names why
    /// nothing was added.
    pub async fn increment(
        &self,
        entries: Vec<IncrementEntry>,
        wait: Duration,
    ) -> Result<Result<Vec<i64>, String>, BackendError> {
        if entries.is_empty() {
            return Ok(Ok(Vec::new()));
        }
        let mut call = self.increment.prepare_invoke();
        for e in &entries {
            call.key(&e.key)
                .arg(e.delta)
                .arg(e.expire_seconds.map_or(0, |s| s.max(1)));
        }
        let answer: Vec<i64> = self.run(wait, async |c| call.invoke_async(c).await).await?;
        match answer.split_first() {
            Some((1, values)) if values.len() == entries.len() => Ok(Ok(values.to_vec())),
            Some((0, _)) => Ok(Err("a key holds a value that is not a counter".into())),
            _ => Err(BackendError(format!(
                "redis: the increment script answered {} values for {} keys",
                answer.len(),
                entries.len()
            ))),
        }
    }

    /// Removes `keys`.
    pub async fn delete(&self, keys: Vec<Vec<u8>>, wait: Duration) -> Result<(), BackendError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.run(wait, async |c| {
            redis::cmd("DEL").arg(&keys).query_async::<()>(c).await
        })
        .await
    }
}
