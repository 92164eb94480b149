//! tapio-controller: one per cluster. Serves tapio-wire/v1 to the agents,
//! tracks them, validates and exports their evidence.

mod errors;
mod export;
mod front;
mod metrics;
mod profile_store;
mod registry;
mod server;
use tapio_common::signals;

use argh::FromArgs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// mimalloc's thread-local free lists instead of glibc's arenas: the
/// request path allocates per request (bodies, parsed JSON). With the
/// `controller` profile's opt-level 3 it takes the request path's
/// instructions down by 46 % (docs/architecture.md, "Decisions").
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tapio controller: the tapio-wire/v1 server for a cluster's agents.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
enum Command {
    Serve(ServeArgs),
    Compile(CompileArgs),
    Check(CheckArgs),
}

/// The default listen address.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

impl ServeArgs {
    /// Flags win; otherwise TAPIO_LISTEN, TAPIO_PROFILE and TAPIO_EXPORT_DIR
    /// (the systemd unit sets them and /etc/default/tapio-controller
    /// overrides them, so no flag is ever given twice). Empty means unset.
    fn with_env_defaults(mut self, env: impl Fn(&str) -> Option<String>) -> ServeArgs {
        let var = |k: &str| env(k).filter(|v| !v.trim().is_empty());
        if self.listen.is_none() {
            self.listen = Some(var("TAPIO_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()));
        }
        if self.profile.is_none() {
            self.profile = var("TAPIO_PROFILE").map(PathBuf::from);
        }
        if self.export_dir.is_none() {
            self.export_dir = var("TAPIO_EXPORT_DIR").map(PathBuf::from);
        }
        self
    }

    fn listen(&self) -> &str {
        self.listen.as_deref().unwrap_or(DEFAULT_LISTEN)
    }
}

/// Serve tapio-wire/v1. SIGHUP (or a change of the profile file) reloads
/// the profile; SIGTERM stops gracefully.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct ServeArgs {
    /// address to listen on (default $TAPIO_LISTEN, else 127.0.0.1:7070)
    #[argh(option)]
    listen: Option<String>,
    /// the Evidence Profile YAML to serve (default $TAPIO_PROFILE, else
    /// the builtin production-default)
    #[argh(option)]
    profile: Option<PathBuf>,
    /// directory for the hourly JSONL export of accepted events (default
    /// $TAPIO_EXPORT_DIR; off when neither is set)
    #[argh(option)]
    export_dir: Option<PathBuf>,
    /// file holding a bearer token every request must carry (off when not
    /// given)
    #[argh(option)]
    token_file: Option<PathBuf>,
    /// worker threads answering requests (default 8)
    #[argh(option, default = "8")]
    workers: usize,
    /// largest accepted request body in bytes (default 1048576)
    #[argh(option, default = "1024 * 1024")]
    max_body_bytes: usize,
    /// socket read/write timeout in seconds for every connection, and the
    /// longest a client may take to send its request head (default 10)
    #[argh(option, default = "10")]
    io_timeout_secs: u64,
    /// most client connections open at once (capped at the open-file
    /// limit); at it the longest-idle one is closed for a new one, and with
    /// none idle the new one is closed at once (default 16384)
    #[argh(option, default = "16384")]
    max_connections: usize,
    /// seconds a kept-alive connection may wait for its next request
    /// before it is closed (default 60)
    #[argh(option, default = "tapio_wire::limits::HTTP_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: u64,
    /// heartbeat interval the agents are told, seconds (default 10)
    #[argh(option, default = "10")]
    heartbeat_interval_secs: u32,
    /// config poll interval the agents are told, seconds (default 10)
    #[argh(option, default = "10")]
    config_poll_interval_secs: u32,
    /// heartbeat age reported as the staleness threshold in /v1/status,
    /// seconds (default 30); a fact for readers, never applied as a verdict
    #[argh(option, default = "30")]
    stale_after_secs: u64,
    /// most agent instances tracked; the least recently seen is forgotten
    /// beyond it (default 100000)
    #[argh(option, default = "100_000")]
    max_instances: usize,
    /// seconds between checks of the profile file's mtime (default 2)
    #[argh(option, default = "2")]
    reload_poll_secs: u64,
    /// log level: error, warn, info, debug (default info)
    #[argh(option, default = "String::from(\"info\")")]
    log_level: String,
}

/// Validate an Evidence Profile and print its CompiledConfig JSON (for a
/// standalone agent's --config).
#[derive(FromArgs)]
#[argh(subcommand, name = "compile")]
struct CompileArgs {
    /// the Evidence Profile YAML file
    #[argh(positional)]
    file: PathBuf,
}

/// Validate an Evidence Profile: exit 0 when valid, 1 when not.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct CheckArgs {
    /// the Evidence Profile YAML file
    #[argh(positional)]
    file: PathBuf,
}

fn main() {
    let args: Args = argh::from_env();
    let code = match args.command {
        Command::Serve(a) => serve(a),
        Command::Compile(a) => match profile_store::load(&a.file) {
            Ok(cfg) => match serde_json::to_string_pretty(&cfg) {
                Ok(s) => {
                    println!("{s}");
                    0
                }
                Err(e) => {
                    eprintln!("tapio-controller: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Command::Check(a) => match profile_store::load(&a.file) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({})",
                    a.file.display(),
                    profile_store::config_hash(&cfg)
                );
                0
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn read_token(path: &PathBuf) -> Result<String, String> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let t = t.trim().to_string();
    if t.is_empty() || t.len() > 4096 || t.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "--token-file {}: the token must be 1..4096 printable ASCII characters",
            path.display()
        ));
    }
    Ok(t)
}

/// Every connection is a file descriptor: raise the soft limit to the hard
/// one, so thousands of agents (or slow clients) do not exhaust it.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// `--max-connections`, within the open-file limit (keeping some files for
/// the listener, the export, the profile and the poller).
fn connection_limit(asked: usize, nofile: u64) -> usize {
    const RESERVED_FILES: u64 = 64;
    let fits = usize::try_from(nofile.saturating_sub(RESERVED_FILES)).unwrap_or(usize::MAX);
    asked.max(16).min(fits.max(16))
}

fn serve(a: ServeArgs) -> i32 {
    let a = a.with_env_defaults(|k| std::env::var(k).ok());
    let Some(level) = tapio_common::logger::parse_level(&a.log_level) else {
        eprintln!("tapio-controller: --log-level must be one of error, warn, info, debug");
        return 2;
    };
    tapio_common::logger::init(level);
    signals::install_handlers(signals::Interrupted::Restart);
    let nofile = raise_nofile();
    let max_connections = connection_limit(a.max_connections, nofile);
    if max_connections < a.max_connections {
        log::warn!(
            "--max-connections {} is beyond the open-file limit {nofile}: serving at most {max_connections} connections (raise LimitNOFILE)",
            a.max_connections
        );
    }
    let config = match profile_store::ConfigStore::open(a.profile.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("profile: {e}");
            return 1;
        }
    };
    let token = match a.token_file.as_ref().map(read_token).transpose() {
        Ok(t) => t,
        Err(e) => {
            log::error!("{e}");
            return 2;
        }
    };
    let exporter = match &a.export_dir {
        None => None,
        Some(d) => match export::Exporter::open(d.clone(), Duration::from_secs(1)) {
            Ok(e) => Some(Mutex::new(e)),
            Err(e) => {
                log::error!("--export-dir {}: {e}", d.display());
                return 1;
            }
        },
    };
    let l = match std::net::TcpListener::bind(a.listen()) {
        Ok(l) => l,
        Err(e) => {
            log::error!("cannot listen on {}: {e}", a.listen());
            return 1;
        }
    };
    deepen_backlog(&l);
    let max_body = a.max_body_bytes.max(1024);
    let front_settings = Arc::new(front::Settings {
        max_body,
        io_timeout: Duration::from_secs(a.io_timeout_secs.max(1)),
        idle_timeout: Duration::from_secs(a.idle_timeout_secs.max(1)),
        max_connections,
        buffer_budget: tapio_wire::limits::CONTROLLER_BUFFER_BUDGET_BYTES.max(2 * max_body),
        workers: a.workers.max(1),
    });
    let front_counters = Arc::new(front::FrontCounters::default());
    let now_ns = tapio_common::time::now_unix_ns();
    let state = Arc::new(server::State {
        http: Default::default(),
        front: Some(Arc::clone(&front_counters)),
        controller_id: format!("{:016x}", now_ns ^ u64::from(std::process::id()) << 32),
        started: Instant::now(),
        started_at: tapio_common::time::rfc3339_ns(now_ns),
        config,
        registry: Mutex::new(registry::Registry::new(a.max_instances)),
        exporter,
        counters: server::Counters::default(),
        settings: server::Settings {
            max_body_bytes: max_body,
            heartbeat_interval_secs: a.heartbeat_interval_secs.max(1),
            config_poll_interval_secs: a.config_poll_interval_secs.max(1),
            stale_after_secs: a.stale_after_secs,
            token,
        },
    });
    let active = state.config.current();
    log::info!(
        "tapio-controller {} listening on {} (workers {}, profile {}, config_version {} {}, auth {}, export {})",
        env!("CARGO_PKG_VERSION"),
        a.listen(),
        a.workers,
        active.config.profile,
        active.version,
        active.hash,
        if state.settings.token.is_some() {
            "bearer token"
        } else {
            "off"
        },
        a.export_dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "off".into())
    );
    let handler_state = Arc::clone(&state);
    let running = match front::run(
        l,
        front_settings,
        front_counters,
        Arc::new(move |req| server::handle(&handler_state, req)),
        signals::stop_requested,
    ) {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the HTTP front: {e}");
            return 1;
        }
    };
    let mut last_poll = Instant::now();
    while !signals::stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
        if signals::take_reload() {
            state.config.reload("SIGHUP");
        }
        if last_poll.elapsed() >= Duration::from_secs(a.reload_poll_secs.max(1)) {
            state.config.poll_file();
            last_poll = Instant::now();
        }
        if let Some(ex) = &state.exporter {
            let due = ex.lock().map(|mut e| e.due_for_sync()).unwrap_or_default();
            for f in due {
                let _ = f.sync_data();
            }
        }
    }
    log::info!("stopping: finishing requests in flight");
    running.join();
    if let Some(ex) = &state.exporter {
        if let Ok(mut ex) = ex.lock() {
            ex.sync();
        }
    }
    0
}

/// Gives the listening socket the backlog a fleet reconnecting at once
/// needs (`CONTROLLER_LISTEN_BACKLOG`; the standard library listens with
/// 128). listen(2) on a socket already listening sets its backlog anew. A
/// failure keeps the 128 and says so.
fn deepen_backlog(l: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    let backlog = tapio_wire::limits::CONTROLLER_LISTEN_BACKLOG;
    // SAFETY: listen(2) on a socket this function borrows; no memory is
    // passed.
    if unsafe { libc::listen(l.as_raw_fd(), backlog) } != 0 {
        log::warn!(
            "listen backlog {backlog}: {}; keeping the default",
            std::io::Error::last_os_error()
        );
    }
}
