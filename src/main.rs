//! The `sidekey` command line: `run`, `check`, `sign`, `authorize`, `ca`,
//! `status`.
//!
//! Exit codes: 0 success; 1 invalid config or a failed command (for
//! `status`: a route without a usable credential, or no answer); 2 bad
//! command-line usage.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sidekey::app::RunningProxy;
use sidekey::config::Config;

/// mimalloc instead of glibc's malloc: fewer instructions per allocation
/// (tokio's 128-byte-aligned tasks are glibc's slow path); see the README's
/// Performance section. `no_thp`: no transparent huge pages, which would
/// inflate the RSS of many idle connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "sidekey", version, about = "A local authenticating proxy")]
struct Cli {
    /// Config file [default: $SIDEKEY_CONFIG, then ./sidekey.toml]
    #[arg(
        long,
        global = true,
        env = "SIDEKEY_CONFIG",
        default_value = "sidekey.toml"
    )]
    config: PathBuf,
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGINT/SIGTERM; SIGHUP reloads the config.
    Run {
        /// Also reload when the config file changes (checked every second).
        #[arg(long)]
        watch: bool,
    },
    /// Validate the config and print each route, secrets redacted.
    Check,
    /// Print URL as the signed_url route ROUTE would send it; for an
    /// aws_sigv4 route, the signed request's headers (signature redacted).
    Sign {
        route: String,
        url: String,
        /// The request method (aws_sigv4 routes sign it).
        #[arg(long, default_value = "GET")]
        method: String,
    },
    /// Run the OAuth2 authorization-code flow for ROUTE once and store the token.
    ///
    /// Prints the authorization URL (one line on stdout), listens on the
    /// route's redirect_uri, checks the callback's state, exchanges the code
    /// at token_url and writes the token to the route's store (mode 0600).
    Authorize {
        route: String,
        /// How long to wait for the browser to come back.
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// The local CA for TLS interception (`[proxy.intercept]`).
    #[command(subcommand)]
    Ca(CaCommand),
    /// Each route's credential state and traffic, from a running sidekey's
    /// admin listener. Exits 0 when every route has a usable credential,
    /// 1 otherwise (or when sidekey does not answer): usable as a
    /// container health check.
    Status {
        /// The admin listener (host:port) [default: the config's proxy.admin]
        #[arg(long)]
        admin: Option<String>,
        /// Print the /status JSON instead of the table.
        #[arg(long)]
        json: bool,
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a local CA: DIR/sidekey-ca.pem (certificate, 0644) and
    /// DIR/sidekey-ca.key (private key, 0600). ECDSA P-256, valid 10 years.
    /// Refuses to overwrite either file.
    Init {
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Print the CA certificate of the config's [proxy.intercept] (path,
    /// subject, expiry, SHA-256 fingerprint) and how to trust it. Never
    /// the key.
    Show,
}

/// Sets up logging: tracing's `fmt` layer on stderr, filtered by
/// `RUST_LOG` (default `info`). For `run`, access lines and tracing's own
/// lines go through [`sidekey::access_log`]'s writer thread (never
/// blocking a request on stderr); the other commands write directly.
fn init_tracing(format: LogFormat, access_log: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let sink = access_log
        .then(|| {
            sidekey::access_log::install(match format {
                LogFormat::Text => sidekey::access_log::Format::Text,
                LogFormat::Json => sidekey::access_log::Format::Json,
            })
        })
        .and_then(|sink| {
            // Without its thread, lines are logged as before (through
            // tracing, directly).
            sink.map_err(|e| eprintln!("sidekey: cannot start the access log writer: {e}"))
                .ok()
        });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match sink {
        Some(sink) => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(sink.make_writer())
                .with_ansi(ansi);
            match format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().flatten_event(true).init(),
            }
        }
        None => {
            let builder = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .with_ansi(ansi);
            match format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().flatten_event(true).init(),
            }
        }
    }
}

/// How long exiting waits for stderr to take the access lines still
/// queued (a stderr nobody reads must not keep sidekey from exiting).
const LOG_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format, matches!(cli.command, Command::Run { .. }));
    let result = match &cli.command {
        Command::Check => return check(&cli.config),
        Command::Run { watch } => {
            let result = run(&cli.config, *watch);
            // Every access line of the requests served, before exiting.
            sidekey::access_log::flush(LOG_FLUSH_TIMEOUT);
            result
        }
        Command::Sign { route, url, method } => sign(&cli.config, route, method, url),
        Command::Authorize { route, timeout } => authorize(&cli.config, route, *timeout),
        Command::Ca(CaCommand::Init { dir }) => ca_init(dir),
        Command::Ca(CaCommand::Show) => ca_show(&cli.config),
        Command::Status {
            admin,
            json,
            timeout,
        } => return status(&cli.config, admin.as_deref(), *json, *timeout),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sidekey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            println!("{}: invalid", path.display());
            for problem in e.problems() {
                println!("  error: {problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    let metrics = std::sync::Arc::new(sidekey::metrics::Metrics::new());
    let runtime = sidekey::proxy::Runtime::build(&config, &metrics, None);
    println!(
        "{}: {} route{}, listening on {}{}",
        path.display(),
        config.routes.len(),
        if config.routes.len() == 1 { "" } else { "s" },
        config.proxy.listen,
        config
            .proxy
            .admin
            .map_or(String::new(), |a| format!(", admin on {a}"))
    );
    if let Some(intercept) = &config.proxy.intercept {
        println!("  {}", sidekey::redact::describe_intercept(intercept));
    }
    if let Some(upstream_proxy) = &config.proxy.upstream_proxy {
        println!(
            "  {}",
            sidekey::redact::describe_upstream_proxy(upstream_proxy)
        );
    }
    if let Some(shared) = &config.proxy.shared_cache {
        println!("  {}", sidekey::redact::describe_shared_cache(shared));
    }
    for route in &config.routes {
        println!(
            "  {}",
            sidekey::redact::describe_route(route).replace('\n', "\n  ")
        );
    }
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    match runtime {
        Ok(_) => {
            println!("valid");
            ExitCode::SUCCESS
        }
        Err(sidekey::app::RuntimeError::Credentials(errors)) => {
            for (route, e) in errors {
                println!("  error: route \"{route}\": {e}");
            }
            println!("invalid");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("  error: {e}");
            println!("invalid");
            ExitCode::FAILURE
        }
    }
}

/// The control runtime: listeners' accept loops, the admin endpoint, token
/// refreshes, signals. Client connections run on the proxy's own worker
/// threads (`proxy.workers`), so the main thread is enough here: a
/// current-thread runtime, as the in-process tests use. (A one-worker
/// multi-thread runtime added a second thread and its scheduler's
/// bookkeeping to every accepted connection.)
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(path: &Path, watch: bool) -> anyhow::Result<()> {
    // Stamped before reading, so a change made while starting is noticed.
    let stamp = file_stamp(path);
    let config = Config::load(path)?;
    for warning in &config.warnings {
        tracing::warn!(%warning, "config warning");
    }
    tokio_runtime()?.block_on(async {
        // Before the proxy says it is listening: whoever signals it after
        // that line must find the signal handled.
        let signals = Signals::install()?;
        let proxy = RunningProxy::start_from_file(config, path).await?;
        wait_for_signals(signals, &proxy, path, watch.then_some(stamp)).await?;
        tracing::info!("shutting down: draining in-flight requests");
        proxy.shutdown().await;
        // The access lines of the drained requests come before "stopped".
        sidekey::access_log::flush(LOG_FLUSH_TIMEOUT);
        tracing::info!("stopped");
        Ok(())
    })
}

/// What identifies a version of the config file: modification time and
/// length.
type FileStamp = (std::time::SystemTime, u64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// The signals `run` handles, installed before the proxy starts.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install SIGHUP handler")?,
        })
    }
}

#[cfg(unix)]
/// Waits for SIGTERM/SIGINT, reloading on SIGHUP and, when `watch` holds
/// the file's stamp at load, whenever the file changes.
async fn wait_for_signals(
    mut signals: Signals,
    proxy: &RunningProxy,
    path: &Path,
    watch: Option<Option<FileStamp>>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let watching = watch.is_some();
    let mut stamp = watch.flatten();
    loop {
        tokio::select! {
            _ = signals.term.recv() => return Ok(()),
            _ = signals.int.recv() => return Ok(()),
            _ = signals.hup.recv() => {
                stamp = file_stamp(path);
                reload(proxy, path);
            }
            _ = tick.tick(), if watching => {
                let now = file_stamp(path);
                if now != stamp {
                    stamp = now;
                    tracing::info!("config file changed");
                    reload(proxy, path);
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals)
    }
}

#[cfg(not(unix))]
async fn wait_for_signals(
    _signals: Signals,
    _proxy: &RunningProxy,
    _path: &Path,
    _watch: Option<Option<FileStamp>>,
) -> anyhow::Result<()> {
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")
}

/// Re-reads the config; an invalid one is logged and the old one stays.
/// The outcome is counted before it is logged, so that whoever reads the
/// log line finds it counted.
fn reload(proxy: &RunningProxy, path: &Path) {
    let result = Config::load(path).map_err(|e| ("invalid", e.problems().join("; ")));
    let result = result.and_then(|config| {
        proxy
            .reload(config)
            .map_err(|e| ("rejected", e.to_string()))
    });
    let outcome = match &result {
        Ok(()) => "ok",
        Err((outcome, _)) => outcome,
    };
    proxy.record_reload(outcome);
    match result {
        Ok(()) => tracing::info!("config reloaded"),
        Err((_, problems)) => {
            tracing::error!(%problems, "config reload failed; keeping the running config")
        }
    }
}

fn status(path: &Path, admin: Option<&str>, json: bool, timeout: std::time::Duration) -> ExitCode {
    use sidekey::app::status::{client, table};
    let result = (|| -> anyhow::Result<(std::net::SocketAddr, String, _)> {
        let addr = match admin {
            Some(text) => client::resolve(text)?,
            None => {
                let config = Config::load(path)?;
                let Some(addr) = config.proxy.admin else {
                    anyhow::bail!(
                        "{} has no proxy.admin listener; pass --admin HOST:PORT",
                        path.display()
                    );
                };
                if addr.port() == 0 {
                    anyhow::bail!(
                        "proxy.admin in {} has port 0 (any free port); pass --admin HOST:PORT",
                        path.display()
                    );
                }
                client::reachable(addr)
            }
        };
        let (raw, status) = client::fetch(addr, timeout)?;
        Ok((addr, raw, status))
    })();
    match result {
        Ok((addr, raw, status)) => {
            if json {
                print!("{raw}");
            } else {
                print!("{}", table::render(&status, &addr.to_string()));
            }
            if table::healthy(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("sidekey: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sign(path: &Path, route: &str, method: &str, url: &str) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let signed = sidekey::credential::sign(&config, route, method, url)?;
    println!("{}", signed.trim_end());
    Ok(())
}

fn authorize(path: &Path, route: &str, timeout: std::time::Duration) -> anyhow::Result<()> {
    use std::io::Write;
    let config = Config::load(path)?;
    let stored =
        tokio_runtime()?.block_on(sidekey::authorize::run(&config, route, timeout, |url| {
            // The URL alone on stdout (for scripts); the instructions on stderr.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{url}");
            let _ = out.flush();
            eprintln!(
                "sidekey: open the URL above in a browser and grant access; waiting up to {}",
                humantime::format_duration(timeout)
            );
        }))?;
    eprintln!(
        "sidekey: route \"{route}\" is authorized; token stored in {}",
        stored.display()
    );
    Ok(())
}

fn ca_init(dir: &Path) -> anyhow::Result<()> {
    use sidekey::tls::{LocalCa, CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY_DAYS};
    let cert = dir.join(CA_CERT_FILE);
    let key = dir.join(CA_KEY_FILE);
    for path in [&cert, &key] {
        if path.symlink_metadata().is_ok() {
            anyhow::bail!(
                "{} already exists; not overwriting it (remove it first to make a new CA)",
                path.display()
            );
        }
    }
    let (cert_pem, key_pem) = LocalCa::generate()?;
    // The key first: a certificate without its key is useless, and
    // create_new refuses a file that appeared meanwhile.
    write_new(&key, key_pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert, cert_pem.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
    let ca = LocalCa::load(&cert, &key)?;
    println!(
        "created a local CA, valid for {} years (until {}):",
        CA_VALIDITY_DAYS / 365,
        humantime::format_rfc3339_seconds(ca.not_after())
    );
    println!("  certificate {} (0644)", cert.display());
    println!("  private key {} (0600, keep it private)", key.display());
    println!("  subject     {}", ca.subject());
    println!("  SHA-256     {}", ca.fingerprint_sha256());
    println!("set [proxy.intercept] ca_cert and ca_key to these files; `sidekey ca show` says how to trust the certificate");
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path` with `mode`, syncs it
/// and moves it to `path`, refusing if `path` exists (a hard link, not a
/// rename, so an existing file is never replaced).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "ca".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        {
            // The umask may have cleared bits of 0644.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::hard_link(&tmp, path)?;
        std::fs::remove_file(&tmp)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let _ = mode;
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn ca_show(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let Some(intercept) = &config.proxy.intercept else {
        anyhow::bail!("{} has no [proxy.intercept] table", path.display());
    };
    let ca = &intercept.ca;
    let cert =
        std::path::absolute(&intercept.ca_cert).unwrap_or_else(|_| intercept.ca_cert.clone());
    let cert = cert.display();
    println!("certificate  {cert}");
    println!("subject      {}", ca.subject());
    println!(
        "not after    {}",
        humantime::format_rfc3339_seconds(ca.not_after())
    );
    println!("SHA-256      {}", ca.fingerprint_sha256());
    println!();
    println!("Trust it in one process (NODE_EXTRA_CA_CERTS adds to the default roots;");
    println!("the others replace them, so concatenate the system bundle if needed):");
    println!("  export SSL_CERT_FILE={cert}");
    println!("  export REQUESTS_CA_BUNDLE={cert}");
    println!("  export NODE_EXTRA_CA_CERTS={cert}");
    println!("  export CURL_CA_BUNDLE={cert}");
    println!("Trust it system-wide (Debian, Ubuntu):");
    println!(
        "  sudo cp {cert} /usr/local/share/ca-certificates/sidekey-ca.crt && sudo update-ca-certificates"
    );
    println!("Trust it in Java:");
    println!(
        "  keytool -importcert -alias sidekey -file {cert} -cacerts -storepass changeit -noprompt"
    );
    Ok(())
}
