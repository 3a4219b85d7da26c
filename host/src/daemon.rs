//! The running service: engines loaded, milter listeners, the control
//! socket, the metrics listener, the watcher and SIGHUP, wired together in
//! one place. `cordon serve` and every daemon test start it the same way:
//! [`Daemon::start`] loads and binds (so errors come before anything is
//! served), then [`Running::run`] serves until the shutdown future passed
//! in resolves (SIGTERM in the binary, a channel in tests), as mini-redis's
//! `server::run` does.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::config::{Config, ValidConfig};
use crate::control::protocol::ConfigReloadReply;
use crate::control::{ConfigReloader, Control};
use crate::listen::{BindError, ListenAddr, Listener};
use crate::registry::{Registry, RegistryError};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The engines could not be loaded.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The config names no milter listener.
    #[error("{}: nowhere to listen: set milter.listen or pass --listen unix:/path", .0.display())]
    NoListener(PathBuf),
    /// The store engines are granted cannot be used.
    #[error(transparent)]
    Store(#[from] crate::engine::capabilities::store::StoreSetupError),
    /// Loading was abandoned (the loading thread panicked).
    #[error("loading the engines failed: {0}")]
    Task(String),
}

/// The daemon, before it runs.
pub struct Daemon;

/// A started daemon: engines loaded, sockets bound, nothing served yet.
pub struct Running {
    config: ValidConfig,
    registry: Arc<Registry>,
    milter: Vec<Listener>,
    control_socket: Option<Listener>,
    http: Option<Listener>,
    control: Arc<Control>,
    started: Instant,
}

impl Daemon {
    /// Loads every engine of `config` (each self-tested) and binds every
    /// listener it names.
    pub async fn start(config: ValidConfig) -> Result<Running, DaemonError> {
        let started = Instant::now();
        if config.milter.listen.is_empty() {
            return Err(DaemonError::NoListener(config.source.clone()));
        }
        let setup = config.registry.clone();
        let registry = tokio::task::spawn_blocking(move || Registry::load(&setup))
            .await
            .map_err(|e| DaemonError::Task(e.to_string()))??;
        let registry = Arc::new(registry);
        // The daemon holds the embedded store from the start: one it
        // cannot open (another daemon has it) stops it here.
        if let Some(store) = &registry.runtime().services().store {
            store.open_now()?;
        }
        for s in registry.engines().iter().filter(|s| s.enabled()) {
            let g = s.current();
            tracing::info!(
                "engine {} {} {} (definitions {}) loaded in {:.0} ms",
                s.name(),
                g.info.name,
                g.info.version,
                g.info.definitions_version,
                g.load_time.as_secs_f64() * 1000.0
            );
        }
        let mut milter = Vec::new();
        for addr in &config.milter.listen {
            let l = Listener::bind(addr, config.milter.socket_mode).await?;
            tracing::info!("listening on {}", l.local_addr());
            milter.push(l);
        }
        let control_socket = match &config.control.socket {
            Some(path) => {
                let addr = ListenAddr::Unix(path.clone());
                let l = Listener::bind(&addr, config.control.socket_mode).await?;
                tracing::info!("control socket {}", path.display());
                Some(l)
            }
            None => None,
        };
        let http = match config.control.http {
            Some(a) => {
                let l = Listener::bind(&ListenAddr::Tcp(a), 0o600).await?;
                tracing::info!("metrics on http://{}/metrics", l.local_addr());
                Some(l)
            }
            None => None,
        };
        let control = Arc::new(Control {
            registry: registry.clone(),
            started,
            reload_config: Some(config_reloader(config.source.clone(), registry.clone())),
        });
        Ok(Running {
            config,
            registry,
            milter,
            control_socket,
            http,
            control,
            started,
        })
    }
}

/// Re-reads the config at `path` and applies it to `registry`: engines and
/// live settings swap in one step; listeners, pool and cache sizes stay
/// until a restart. A config that does not validate changes nothing.
fn config_reloader(path: PathBuf, registry: Arc<Registry>) -> ConfigReloader {
    Arc::new(move || {
        let config = Config::load(&path).map_err(|e| {
            tracing::error!("config reload rejected, the old config stays: {e}");
            e.to_string()
        })?;
        let change = registry.apply(&config.registry);
        tracing::info!(
            "config {} reloaded: added {:?}, removed {:?}, reloaded {:?}, failed {:?}",
            path.display(),
            change.added,
            change.removed,
            change.reloaded,
            change.failed
        );
        Ok(ConfigReloadReply {
            config: path.clone(),
            change,
        })
    })
}

impl Running {
    /// The engines and live settings.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Where the milter listens (with real ports for port 0).
    pub fn milter_addrs(&self) -> Vec<ListenAddr> {
        self.milter.iter().map(Listener::local_addr).collect()
    }

    /// The control socket, if configured.
    pub fn control_socket(&self) -> Option<&Path> {
        self.config.control.socket.as_deref()
    }

    /// Where `/metrics` is served (with the real port for port 0).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        match self.http.as_ref().map(Listener::local_addr) {
            Some(ListenAddr::Tcp(a)) => Some(a),
            _ => None,
        }
    }

    /// Serves until `shutdown` resolves, then drains the milter sessions
    /// (see [`crate::milter`]), stops the control socket, the metrics
    /// listener and the watcher, and removes the sockets it made. Returns
    /// the number of milter sessions served.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> u64 {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        if let Some(l) = self.control_socket {
            tasks.spawn(crate::control::serve_socket(
                l,
                self.control.clone(),
                stop_rx.clone(),
            ));
        }
        if let Some(l) = self.http {
            tasks.spawn(crate::control::serve_http(
                l,
                self.control.clone(),
                stop_rx.clone(),
            ));
        }
        if self.config.reload.enabled {
            tasks.spawn(crate::watch::run(
                self.registry.clone(),
                self.config.reload.interval,
                stop_rx.clone(),
            ));
        }
        tasks.spawn(reload_on_hangup(self.control.clone(), stop_rx.clone()));
        tracing::info!(
            "ready in {:.1} s, at most {} sessions",
            self.started.elapsed().as_secs_f64(),
            self.config.milter.max_sessions
        );
        crate::milter::notify_ready();
        let served = crate::milter::serve(
            self.milter,
            self.registry.clone(),
            &self.config.milter,
            shutdown,
        )
        .await;
        stop_tx.send_replace(true);
        while tasks.join_next().await.is_some() {}
        if let Some(p) = &self.config.control.socket {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!("stopped after {served} session(s)");
        served
    }
}

/// Re-reads the config on SIGHUP until `stop` turns true.
async fn reload_on_hangup(control: Arc<Control>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler: config reload by signal is off");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = control.reload_config().await;
            }
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        }
    }
}
