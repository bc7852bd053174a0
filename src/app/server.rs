//! Listeners and their lifecycle: bind, accept, reload, graceful shutdown.
//!
//! [`RunningProxy::start`] binds every listener of a config (port 0 picks
//! a free port, which is how tests run many proxies at once) and returns a
//! handle with the bound addresses, [`RunningProxy::reload`] (which opens
//! and closes listeners as the new config says) and
//! [`RunningProxy::shutdown`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::accept::accept_on_workers;
use super::runtime::RuntimeError;
use super::status::ProcessInfo;
use super::workers::Workers;
use crate::client::pool;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::metrics::StallLabels;
use crate::proxy::conn;
use crate::proxy::error::bad_request;
use crate::proxy::handler::{handle, ConnInfo};
use crate::proxy::{Runtime, Shared};
use crate::wire::h1;
use crate::wire::h1::server::{Limits, Stalls};

/// A listener that could not be bound.
#[derive(Debug, Error)]
#[error("cannot listen on {addr} ({what}): {source}")]
pub struct BindError {
    addr: SocketAddr,
    what: String,
    #[source]
    source: std::io::Error,
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("cannot start the worker threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

#[derive(Debug, Error)]
pub enum ReloadError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// What a listener is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Role {
    /// `proxy.listen`: routed by host.
    Proxy,
    /// A route's own `listen`.
    Route(Arc<str>),
    /// `proxy.admin`.
    Admin,
    /// `proxy.intercept.listen`: TLS, the leaf picked by SNI.
    Tls,
}

impl Role {
    /// The config key that asks for it.
    fn key(&self) -> String {
        match self {
            Role::Proxy => "proxy.listen".into(),
            Role::Route(name) => format!("route \"{name}\" listen"),
            Role::Admin => "proxy.admin".into(),
            Role::Tls => "proxy.intercept.listen".into(),
        }
    }
}

/// The listeners `config` asks for, with their configured addresses.
fn wanted(config: &Config) -> Vec<(Role, SocketAddr)> {
    let mut wanted = vec![(Role::Proxy, config.proxy.listen)];
    wanted.extend(config.proxy.admin.map(|addr| (Role::Admin, addr)));
    if let Some(addr) = config.proxy.intercept.as_ref().and_then(|i| i.listen) {
        wanted.push((Role::Tls, addr));
    }
    for route in &config.routes {
        if let Some(addr) = route.listen {
            wanted.push((Role::Route(Arc::from(route.name.as_str())), addr));
        }
    }
    wanted
}

/// Binds `addr` for `role` (port 0: a free port), as Tokio's
/// `TcpListener::bind` would (`SO_REUSEADDR`, backlog 1024) but without
/// awaiting, so that a reload binds everything before it changes anything.
fn bind(role: &Role, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let error = |source| BindError {
        addr,
        what: role.key(),
        source,
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(error)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    let listener = socket.listen(1024).map_err(error)?;
    let bound = listener.local_addr().unwrap_or(addr);
    Ok((listener, bound))
}

/// One open listener.
struct Listening {
    role: Role,
    /// As configured (port 0 stays 0 here: the same config keeps it).
    configured: SocketAddr,
    bound: SocketAddr,
    /// Closes it: it stops accepting, its connections run on.
    close: watch::Sender<bool>,
}

/// The open listeners and every accept loop task started (a closed
/// listener's task ends once its connections have).
#[derive(Default)]
struct Listeners {
    open: Vec<Listening>,
    tasks: Vec<JoinHandle<()>>,
}

/// A running proxy: its bound addresses and its controls.
pub struct RunningProxy {
    shared: Arc<Shared>,
    config: ArcSwap<Config>,
    listeners: Mutex<Listeners>,
    shutdown: watch::Sender<bool>,
    workers: Arc<Workers>,
    /// What the status views show of the process.
    process: Arc<ProcessInfo>,
}

impl RunningProxy {
    /// Builds the runtime and binds every listener.
    pub async fn start(config: Config) -> Result<RunningProxy, StartError> {
        RunningProxy::start_inner(config, None).await
    }

    /// [`RunningProxy::start`] for a config loaded from `path`: the status
    /// views name the file by the time the proxy says it listens.
    pub async fn start_from_file(
        config: Config,
        path: &std::path::Path,
    ) -> Result<RunningProxy, StartError> {
        RunningProxy::start_inner(config, Some(path)).await
    }

    async fn start_inner(
        config: Config,
        path: Option<&std::path::Path>,
    ) -> Result<RunningProxy, StartError> {
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::build(&config, &metrics, None)?;
        runtime.warm_up();
        let shared = Arc::new(Shared {
            unmatched_requests: crate::metrics::RequestCounter::new(
                crate::metrics::RouteName::new("-"),
            ),
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            listening: AtomicBool::new(false),
            serve_tunnel: conn::serve_tunnel,
        });
        let (shutdown, _) = watch::channel(false);
        let workers = Arc::new(Workers::start(config.proxy.workers).map_err(StartError::Workers)?);
        let mut bound = Vec::new();
        for (role, addr) in wanted(&config) {
            let (listener, local) = bind(&role, addr)?;
            bound.push((role, addr, listener, local));
        }
        let proxy = RunningProxy {
            shared,
            config: ArcSwap::from_pointee(config),
            listeners: Mutex::new(Listeners::default()),
            shutdown,
            workers,
            process: Arc::new(ProcessInfo::new()),
        };
        if let Some(path) = path {
            proxy.set_config_file(path);
        }
        {
            let mut listeners = proxy.lock_listeners();
            for (role, configured, listener, local) in bound {
                proxy.open(&mut listeners, role, configured, listener, local);
            }
            proxy.note_listeners(&listeners);
            listeners.tasks.push(tokio::spawn(sample_traffic(
                proxy.shared.metrics.clone(),
                proxy.shutdown.subscribe(),
            )));
            // The control runtime's thread keeps the connections of the
            // token requests made there: swept like the workers' until
            // shutdown.
            let mut stop = proxy.shutdown.subscribe();
            listeners
                .tasks
                .push(tokio::spawn(pool::sweep_until(async move {
                    let _ = stop.changed().await;
                })));
        }
        proxy.shared.listening.store(true, Ordering::Release);
        let config = proxy.config.load();
        tracing::info!(
            proxy_addr = %proxy.proxy_addr(),
            admin_addr = %proxy.admin_addr().map_or("off".to_string(), |a| a.to_string()),
            routes = config.routes.len(),
            workers = config.proxy.workers,
            "sidekey listening"
        );
        Ok(proxy)
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Listeners> {
        // Plain data: a panic elsewhere while holding it leaves it usable.
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts accepting on `listener` (bound for `role`).
    fn open(
        &self,
        listeners: &mut Listeners,
        role: Role,
        configured: SocketAddr,
        listener: TcpListener,
        bound: SocketAddr,
    ) {
        let (close, closed) = watch::channel(false);
        let shutdown = self.shutdown.subscribe();
        let task = match &role {
            Role::Admin => tokio::spawn(super::admin::accept_loop(
                listener,
                self.shared.clone(),
                self.process.clone(),
                closed,
                shutdown,
            )),
            Role::Tls => tokio::spawn(tls_accept_loop(
                into_std(listener),
                self.shared.clone(),
                closed,
                shutdown,
                self.config.load().proxy.drain_timeout,
                self.workers.clone(),
            )),
            Role::Proxy | Role::Route(_) => tokio::spawn(proxy_accept_loop(
                into_std(listener),
                self.shared.clone(),
                match &role {
                    Role::Route(name) => Some(name.clone()),
                    _ => None,
                },
                closed,
                shutdown,
                self.config.load().proxy.drain_timeout,
                self.workers.clone(),
            )),
        };
        listeners.tasks.push(task);
        listeners.open.push(Listening {
            role,
            configured,
            bound,
            close,
        });
    }

    /// The bound address of the listener for `role`.
    fn addr_of(&self, role: &Role) -> Option<SocketAddr> {
        let listeners = self.lock_listeners();
        listeners
            .open
            .iter()
            .find(|l| l.role == *role)
            .map(|l| l.bound)
    }

    /// The forward-proxy / Host-routed listener.
    pub fn proxy_addr(&self) -> SocketAddr {
        self.addr_of(&Role::Proxy)
            .unwrap_or_else(|| self.config.load().proxy.listen)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.addr_of(&Role::Admin)
    }

    /// The TLS listener of `[proxy.intercept]`.
    pub fn intercept_addr(&self) -> Option<SocketAddr> {
        self.addr_of(&Role::Tls)
    }

    /// The dedicated listener of a route.
    pub fn route_addr(&self, route: &str) -> Option<SocketAddr> {
        self.addr_of(&Role::Route(Arc::from(route)))
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Applies a new, already validated config to new requests; requests in
    /// flight finish with the old one. Listeners the new config adds are
    /// bound first (a reload that cannot bind one changes nothing), then
    /// the config is swapped, then listeners it no longer has are closed:
    /// they stop accepting, and their connections run on with the new
    /// config. What did not change is kept (see [`Runtime::build`]).
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let old = self.config.load();
        if old.proxy.workers != config.proxy.workers {
            tracing::warn!(
                workers = old.proxy.workers,
                "proxy.workers changed; the new number applies after a restart"
            );
        }
        let previous = self.shared.runtime.load();
        let runtime = Runtime::build(&config, &self.shared.metrics, Some(&previous))?;
        let wanted = wanted(&config);
        let mut listeners = self.lock_listeners();
        let mut added = Vec::new();
        for (role, addr) in &wanted {
            let kept = listeners
                .open
                .iter()
                .any(|l| l.role == *role && l.configured == *addr);
            if !kept {
                let (listener, bound) = bind(role, *addr)?;
                added.push((role.clone(), *addr, listener, bound));
            }
        }
        runtime.warm_up();
        self.shared.runtime.store(Arc::new(runtime));
        self.config.store(Arc::new(config));
        listeners.tasks.retain(|task| !task.is_finished());
        for (role, configured, listener, bound) in added {
            tracing::info!(listener = %role.key(), addr = %bound, "listening");
            self.open(&mut listeners, role, configured, listener, bound);
        }
        listeners.open.retain(|l| {
            let keep = wanted
                .iter()
                .any(|(r, a)| *r == l.role && *a == l.configured);
            if !keep {
                tracing::info!(listener = %l.role.key(), addr = %l.bound, "listener closed");
                let _ = l.close.send(true);
            }
            keep
        });
        self.note_listeners(&listeners);
        self.process.lock().loaded_at = std::time::SystemTime::now();
        Ok(())
    }

    /// Records the open listeners for the status views.
    fn note_listeners(&self, listeners: &Listeners) {
        self.process.lock().listeners = listeners
            .open
            .iter()
            .map(|l| (l.role.key(), l.bound))
            .collect();
    }

    /// Names the file the config was loaded from, for the status views.
    pub fn set_config_file(&self, path: &std::path::Path) {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        self.process.lock().config_file = Some(path);
    }

    /// Counts a reload attempt by `outcome` (`ok`, `invalid`: the file
    /// did not load, `rejected`: [`RunningProxy::reload`] refused it) in
    /// `sidekey_config_reloads_total` and in the status views.
    pub fn record_reload(&self, outcome: &'static str) {
        self.shared
            .metrics
            .reloads
            .get_or_create(&crate::metrics::ReloadLabels { outcome })
            .inc();
        self.process.lock().last_reload = Some((std::time::SystemTime::now(), outcome));
    }

    /// Stops accepting, lets in-flight requests finish (bounded by
    /// `proxy.drain_timeout`), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut self.lock_listeners().tasks);
        for task in tasks {
            let _ = task.await;
        }
        // The accept loops are done with their handles to the workers.
        if let Ok(workers) = Arc::try_unwrap(self.workers) {
            workers.stop().await;
        }
    }
}

async fn proxy_accept_loop(
    listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    route: Option<Arc<str>>,
    close: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    workers: Arc<Workers>,
) {
    let Some(listener) = listener else {
        return;
    };
    let metrics = shared.metrics.clone();
    let stalls = stalls(&metrics);
    accept_on_workers(
        listener,
        close,
        shutdown,
        drain,
        Some(&metrics.active_connections),
        workers,
        move |stream, peer, stop, active| {
            let shared = shared.clone();
            let limits = limits(&shared.runtime.load().settings, stalls.clone());
            let conn = ConnInfo {
                peer,
                route: route.clone(),
                tls_host: None,
                limits: limits.clone(),
                stop: stop.clone(),
            };
            async move {
                let _active = active;
                // Boxed: the request's future (the largest state of a
                // connection) is allocated only while a request is in
                // flight, not kept in every idle connection.
                let service = |req| Box::pin(handle(&shared, &conn, req));
                h1::server::serve_once_spoken(stream, limits, stop, bad_request, service).await;
            }
        },
    )
    .await;
}

/// The counters of bodies stalled past `body_idle_timeout`, by side.
fn stalls(metrics: &Metrics) -> Stalls {
    // One statement each: the family's lock guard lives to the end of
    // its statement, and creating the second entry needs that lock.
    let upstream = metrics
        .body_stalls
        .get_or_create_owned(&StallLabels { side: "upstream" });
    let client = metrics
        .body_stalls
        .get_or_create_owned(&StallLabels { side: "client" });
    Stalls { upstream, client }
}

/// The TLS listener: an app whose `https://api.example.com` resolves to
/// sidekey. Each connection is served by [`conn::serve_sni`].
async fn tls_accept_loop(
    listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    close: watch::Receiver<bool>,
    shutdown: watch::Receiver<bool>,
    drain: Duration,
    workers: Arc<Workers>,
) {
    let Some(listener) = listener else {
        return;
    };
    let metrics = shared.metrics.clone();
    let stalls = stalls(&metrics);
    accept_on_workers(
        listener,
        close,
        shutdown,
        drain,
        Some(&metrics.active_connections),
        workers,
        move |stream, peer, stop, active| {
            let shared = shared.clone();
            let runtime = shared.runtime.load_full();
            let limits = limits(&runtime.settings, stalls.clone());
            async move {
                let _active = active;
                conn::serve_sni(shared, runtime, stream, peer, limits, stop).await;
            }
        },
    )
    .await;
}

/// `listener` as a std socket, for the workers to accept on (each
/// registers a clone in its own reactor); `None` (logged) if the socket
/// cannot be taken out of this runtime's.
fn into_std(listener: TcpListener) -> Option<std::net::TcpListener> {
    listener
        .into_std()
        .inspect_err(|e| tracing::warn!(error = %e, "cannot hand a listener to the workers"))
        .ok()
}

/// Samples every route's traffic once a second (see [`crate::traffic`]),
/// until shutdown.
async fn sample_traffic(metrics: Arc<Metrics>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => metrics.traffic.sample(),
        }
    }
}

/// The client connection limits of the current config.
fn limits(settings: &crate::config::ProxySettings, stalls: Stalls) -> Limits {
    Limits {
        header_read_timeout: settings.header_read_timeout,
        body_idle_timeout: settings.body_idle_timeout,
        max_header_bytes: settings.max_header_bytes,
        max_headers: settings.max_headers,
        stalls,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn proxy(header_read_timeout: &str) -> RunningProxy {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout = \"{header_read_timeout}\"\n"
        );
        let config = Config::parse(&text, Path::new("."), &|_| None).expect("valid config");
        RunningProxy::start(config).await.expect("proxy starts")
    }

    async fn read_some(stream: &mut TcpStream) -> Vec<u8> {
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer or a close within 5 s")
            .expect("read");
        buf.truncate(n);
        buf
    }

    /// Waits until the proxy has accepted `n` connections.
    async fn accepted(proxy: &RunningProxy, n: i64) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while proxy.metrics().active_connections.get() < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the connection is accepted within 5 s");
    }

    #[tokio::test]
    async fn a_connection_that_speaks_late_is_served() {
        let proxy = proxy("10s").await;
        let mut s = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
        // Speak only once the proxy is waiting for the first byte.
        accepted(&proxy, 1).await;
        s.write_all(b"GET http://nowhere.example/ HTTP/1.1\r\nHost: nowhere.example\r\n\r\n")
            .await
            .unwrap();
        let answer = read_some(&mut s).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 403"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn a_silent_connection_is_closed_after_the_header_read_timeout() {
        let proxy = proxy("200ms").await;
        let mut s = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
        assert!(
            read_some(&mut s).await.is_empty(),
            "closed without an answer"
        );
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn connections_are_spread_over_the_workers() {
        let text =
            "[proxy]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nheader_read_timeout = \"60s\"\n";
        let config = Config::parse(text, Path::new("."), &|_| None).expect("valid config");
        let proxy = RunningProxy::start(config).await.expect("proxy starts");
        // Opened at once and all kept open: whichever worker wins the
        // race to accept them, both end up serving their share.
        let n = 40;
        let mut clients = Vec::new();
        for _ in 0..n {
            clients.push(TcpStream::connect(proxy.proxy_addr()).await.unwrap());
        }
        accepted(&proxy, n).await;
        let loads = proxy.workers.loads();
        assert_eq!(loads.iter().sum::<usize>(), n as usize, "{loads:?}");
        let (least, most) = (loads.iter().min(), loads.iter().max());
        let (Some(&least), Some(&most)) = (least, most) else {
            panic!("no workers");
        };
        assert!(most - least <= 2, "connections per worker: {loads:?}");
        drop(clients);
        proxy.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_does_not_wait_for_silent_connections() {
        let proxy = proxy("60s").await;
        let mut s = TcpStream::connect(proxy.proxy_addr()).await.unwrap();
        accepted(&proxy, 1).await;
        tokio::time::timeout(Duration::from_secs(5), proxy.shutdown())
            .await
            .expect("shutdown is not held up by a connection that never spoke");
        assert!(read_some(&mut s).await.is_empty());
    }
}
