//! The agent's life: `start` (arguments, load, threads), `apply` (the one
//! place a config generation is applied: at start, on SIGHUP and for the
//! controller), the main loop, and `shutdown` (drain, count what is left,
//! final metrics). `main.rs::run` only strings these together.

use crate::args::RunArgs;
use crate::metrics::{Metrics, SinkId};
use crate::observers::{NAMES as OBSERVER_NAMES, index_of};
use crate::sink::Sink;
use crate::{client, config, host, loader, poller, sender, sink};
use crossbeam_channel::Receiver;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapio_common::signals;
use tapio_wire::limits::MAX_AGENT_QUEUE;
use tapio_wire::{CompiledConfig, ConfigResponse, ObserverState};

/// Exit codes of `run`: 1 nothing could be observed (or a thread could not
/// start), 2 bad configuration or arguments.
pub const EXIT_RUNTIME: i32 = 1;
pub const EXIT_USAGE: i32 = 2;

/// Where a config generation comes from.
pub enum Source {
    /// The config the agent starts with (builtin or `--config`).
    Start,
    /// SIGHUP re-read this file.
    Reload(PathBuf),
    /// The controller served it.
    Controller(Box<ConfigResponse>),
}

/// What `start` validated from the arguments.
struct Settings {
    cfg: CompiledConfig,
    endpoint: Option<client::http::Endpoint>,
    token: Option<client::http::Token>,
}

/// The one place a config generation is applied, and what it touches.
pub struct Applier {
    shared: config::SharedConfig,
    writers: loader::ConfigWriters,
    metrics: Arc<Metrics>,
    /// What heartbeats report as applied (controller configs only).
    applied: Arc<Mutex<client::Applied>>,
}

/// Reads the kernel's counters and writes the metrics file.
struct MetricsWriter {
    metrics: Arc<Metrics>,
    counters: loader::CounterReaders,
    programs: loader::ProgramReaders,
    file: Option<PathBuf>,
}

impl MetricsWriter {
    fn write(&self) {
        if let Ok(mut k) = self.metrics.kernel.lock() {
            self.counters.read_into(&mut k);
        }
        self.metrics.set_recursion_misses(self.programs.read());
        if let Some(p) = &self.file {
            if let Err(e) = self.metrics.write_textfile(p) {
                log::warn!("metrics file {}: {e}", p.display());
            }
        }
    }
}

/// A started agent: its threads and what the main thread needs to apply
/// configs, write metrics and shut down.
pub struct Running {
    args: RunArgs,
    applier: Applier,
    metrics_writer: MetricsWriter,
    updates: Receiver<client::ConfigUpdate>,
    /// Kept to count what a stuck sender leaves in the queue at shutdown.
    leftover: sender::Queue,
    poller_stop: Arc<AtomicBool>,
    poller: JoinHandle<()>,
    sender: JoinHandle<()>,
    client: Option<JoinHandle<()>>,
}

fn usage(what: &str, e: impl std::fmt::Display) -> i32 {
    log::error!("{what}: {e}");
    EXIT_USAGE
}

fn validate(a: &RunArgs) -> Result<Settings, i32> {
    let queue_ok = |n: usize| (1..=MAX_AGENT_QUEUE).contains(&n);
    if !queue_ok(a.queue_capacity) {
        return Err(usage(
            "--queue-capacity",
            format!("must be between 1 and {MAX_AGENT_QUEUE}"),
        ));
    }
    if !queue_ok(a.controller_queue) {
        return Err(usage(
            "--controller-queue",
            format!("must be between 1 and {MAX_AGENT_QUEUE}"),
        ));
    }
    let cfg = config::initial(a.config.as_deref()).map_err(|e| usage("config", e))?;
    let endpoint = a
        .controller
        .as_deref()
        .map(client::http::parse_url)
        .transpose()
        .map_err(|e| usage("--controller", e))?;
    let token = match &a.token_file {
        None => None,
        // The reason never includes the file's content.
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| e.to_string())
                .and_then(client::http::Token::new)
                .map_err(|e| usage(&format!("--token-file {}", p.display()), e))?,
        ),
    };
    Ok(Settings {
        cfg,
        endpoint,
        token,
    })
}

fn spawn(name: &str, f: Box<dyn FnOnce() + Send>) -> Result<JoinHandle<()>, i32> {
    thread(name, f).map_err(|e| {
        log::error!("cannot start the {name} thread: {e}");
        EXIT_RUNTIME
    })
}

/// Starts a named thread. Not generic: every thread of the agent shares
/// one copy of the standard library's thread start (about 1 KB each).
pub fn thread(name: &str, f: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// Loads every observer it can and records each one's state.
fn load(cfg: &CompiledConfig, metrics: &Metrics) -> Result<Vec<loader::Observer>, i32> {
    if let Err(e) = loader::raise_memlock() {
        log::warn!(
            "cannot raise RLIMIT_MEMLOCK ({e}); fine on kernels >= 5.11, which charge BPF memory to the memory cgroup"
        );
    }
    let (observers, failed) = loader::load_all(&config::to_kernel(cfg, 1));
    for (idx, err) in &failed {
        log::error!(
            "observer {} failed to load or attach: {err}",
            OBSERVER_NAMES[*idx]
        );
        metrics.set_state(*idx, ObserverState::Failed);
    }
    for o in &observers {
        log::info!("observer {} attached", OBSERVER_NAMES[o.index]);
        metrics.set_state(o.index, ObserverState::Up);
    }
    if observers.is_empty() {
        log::error!(
            "no observer could be loaded; is this a Linux >= 5.10 host with BTF, run as root or with CAP_BPF+CAP_PERFMON?"
        );
        return Err(EXIT_RUNTIME);
    }
    Ok(observers)
}

fn local_sinks(a: &RunArgs, metrics: &Arc<Metrics>) -> Vec<(SinkId, Box<dyn Sink + Send>)> {
    let mut sinks: Vec<(SinkId, Box<dyn Sink + Send>)> = Vec::new();
    if !a.no_stdout {
        sinks.push((SinkId::Stdout, Box::new(sink::stdout::StdoutSink::new())));
    }
    if let Some(dir) = &a.data_dir {
        let mut sc = sink::file::StoreConfig::new(dir.clone());
        sc.fallback = a.fallback_dir.clone();
        sc.max_age_hours = a.retention_hours.max(1);
        sc.max_bytes = a.retention_mib.max(1) * 1024 * 1024;
        sinks.push((
            SinkId::File,
            Box::new(sink::file::FileSink::new(sc).with_metrics(Arc::clone(metrics))),
        ));
    }
    sinks
}

/// The controller client: its own thread behind a bounded queue, fed by
/// the sender through a `ControllerSink`.
struct ClientParts {
    ep: client::http::Endpoint,
    token: Option<client::http::Token>,
    identity: client::ClientConfig,
    shared: config::SharedConfig,
    metrics: Arc<Metrics>,
    applied: Arc<Mutex<client::Applied>>,
    updates: crossbeam_channel::Sender<client::ConfigUpdate>,
}

fn start_client(
    a: &RunArgs,
    p: ClientParts,
    sinks: &mut Vec<(SinkId, Box<dyn Sink + Send>)>,
) -> Result<JoinHandle<()>, i32> {
    let (sink, ctl_rx, spare) = client::line_queues(a.controller_queue);
    sinks.push((SinkId::Controller, Box::new(sink)));
    log::info!(
        "controller {}: plaintext HTTP (trusted network only){}",
        p.ep,
        if p.token.is_some() {
            ", bearer token"
        } else {
            ""
        }
    );
    let mut http = client::http::Client::new(p.ep, p.token);
    http.counters = Arc::clone(&p.metrics.controller_connections);
    let t = Duration::from_millis(a.controller_timeout_ms.clamp(10, 600_000));
    http.io_timeout = t;
    http.connect_timeout = t.min(Duration::from_secs(2));
    let ct = client::ClientThread {
        http,
        cfg: p.identity,
        rx: ctl_rx,
        spare,
        metrics: p.metrics,
        shared: p.shared,
        applied: p.applied,
        updates: p.updates,
        started: Instant::now(),
    };
    spawn("tapio-client", Box::new(move || ct.run()))
}

impl Applier {
    /// Applies `cfg` as the next config generation in every loaded object
    /// (rolled back when any write fails) and records it for its source.
    /// Returns whether it is now in force.
    pub fn apply(&self, cfg: CompiledConfig, source: Source) -> bool {
        let kept = self.shared.generation();
        let writers = &self.writers;
        let result = config::apply_generation(&self.shared, cfg, |c, g| {
            writers.write(&config::to_kernel(c, g))
        });
        let g = match result {
            Ok(g) => g,
            Err(failures) => {
                match source {
                    Source::Start => log::error!(
                        "{failures} kernel config writes failed for the starting config"
                    ),
                    Source::Reload(_) => {
                        self.metrics.config_reloads_failed.fetch_add(1, Relaxed);
                        log::error!(
                            "SIGHUP: {failures} kernel config writes failed; kept generation {kept}"
                        );
                    }
                    Source::Controller(cr) => log::error!(
                        "controller config {}: {failures} kernel config writes failed; kept generation {kept}, not reported as applied",
                        cr.config_hash
                    ),
                }
                return false;
            }
        };
        self.metrics.config_generation.store(g, Relaxed);
        match source {
            Source::Start => {}
            Source::Reload(path) => {
                self.metrics.config_reloads_ok.fetch_add(1, Relaxed);
                log::info!(
                    "SIGHUP: applied {} as config generation {g}",
                    path.display()
                );
            }
            Source::Controller(cr) => {
                // What heartbeats report: only a config that reached every
                // loaded object.
                if let Ok(mut ap) = self.applied.lock() {
                    *ap = client::Applied {
                        hash: cr.config_hash.clone(),
                        version: cr.config_version.clone(),
                    };
                }
                log::info!(
                    "applied controller config_version {} {} as kernel generation {g}",
                    cr.config_version,
                    cr.config_hash
                );
            }
        }
        true
    }

    /// SIGHUP: re-reads `--config` and applies it; a bad file is rejected
    /// and the generation in force stays.
    fn reload(&self, path: Option<&Path>) {
        let Some(path) = path else {
            log::info!("SIGHUP: no --config file; the builtin defaults stay");
            return;
        };
        match config::load_file(path) {
            Ok(new) => {
                self.apply(new, Source::Reload(path.to_path_buf()));
            }
            Err(e) => {
                self.metrics.config_reloads_failed.fetch_add(1, Relaxed);
                log::error!(
                    "SIGHUP: rejected new config, keeping generation {}: {e}",
                    self.shared.generation()
                );
            }
        }
    }
}

impl Running {
    /// Validates the arguments, loads the observers, applies the starting
    /// config and starts the sender, (with `--controller`) client and
    /// poller threads. `Err` is the exit code.
    pub fn start(a: RunArgs) -> Result<Running, i32> {
        let Settings {
            cfg,
            endpoint,
            token,
        } = validate(&a)?;
        let node_name = a.node_name.clone().unwrap_or_else(host::hostname);
        let agent_id = a
            .agent_id
            .clone()
            .or_else(host::machine_id)
            .unwrap_or_else(|| node_name.clone());
        let instance_id = host::new_instance_id();
        log::info!(
            "tapio-agent {} starting: agent_id={agent_id} node={node_name} instance={instance_id} profile={}",
            env!("CARGO_PKG_VERSION"),
            cfg.profile
        );
        let metrics = Arc::new(Metrics::default());
        let mut observers = load(&cfg, &metrics)?;
        let metrics_writer = MetricsWriter {
            metrics: Arc::clone(&metrics),
            counters: loader::CounterReaders::from_observers(&observers),
            programs: loader::ProgramReaders::from_observers(&mut observers),
            file: a.metrics_file.clone(),
        };
        // Generation 0 until the starting config is applied as generation 1.
        let applier = Applier {
            shared: config::SharedConfig::new(cfg.clone(), 0),
            writers: loader::ConfigWriters::from_observers(&mut observers),
            metrics: Arc::clone(&metrics),
            applied: Arc::new(Mutex::new(client::Applied::default())),
        };
        if !applier.apply(cfg.clone(), Source::Start) {
            return Err(EXIT_RUNTIME);
        }

        let (tx, rx) = sender::queue(a.queue_capacity);
        let mut sinks = local_sinks(&a, &metrics);
        let (updates_tx, updates) = crossbeam_channel::bounded::<client::ConfigUpdate>(4);
        let client = match endpoint {
            None => None,
            Some(ep) => Some(start_client(
                &a,
                ClientParts {
                    ep,
                    token,
                    identity: client::ClientConfig {
                        agent_id,
                        node_name,
                        instance_id: instance_id.clone(),
                        kernel_release: host::kernel_release(),
                        max_attempts: 5,
                        backoff_base: Duration::from_millis(200),
                        backoff_max: Duration::from_secs(10),
                        drain_timeout: Duration::from_secs(a.shutdown_timeout_secs.max(1)),
                    },
                    shared: applier.shared.clone(),
                    metrics: Arc::clone(&metrics),
                    applied: Arc::clone(&applier.applied),
                    updates: updates_tx,
                },
                &mut sinks,
            )?),
        };
        let cgroup_root = a.cgroup_root();
        match &cgroup_root {
            Some(r) => log::info!(
                "workload attribution from the cgroup v2 hierarchy at {}",
                r.display()
            ),
            None => {
                log::info!("workload attribution off (no cgroup v2 mount, or --cgroup-root off)")
            }
        }
        let sender = sender::SenderThread {
            rx: rx.clone(),
            attribution: crate::attribution::Attributor::new(
                cgroup_root,
                Arc::clone(&metrics.attribution),
            ),
            sinks,
            metrics: Arc::clone(&metrics),
            cfg: sender::SenderConfig {
                instance_id,
                max_events: cfg.batching.max_events as usize,
                flush_interval: Duration::from_millis(u64::from(cfg.batching.flush_interval_ms)),
            },
        };
        let sender = spawn("tapio-sender", Box::new(move || sender.run()))?;
        let poller_stop = Arc::new(AtomicBool::new(false));
        let handoff = sender::Handoff::new(tx, sender.thread().clone());
        let poller = start_poller(&cfg, observers, handoff, &applier, &poller_stop)?;
        Ok(Running {
            args: a,
            applier,
            metrics_writer,
            updates,
            leftover: rx,
            poller_stop,
            poller,
            sender,
            client,
        })
    }

    /// The main thread until SIGINT/SIGTERM: reloads, controller configs
    /// and the periodic metrics file.
    pub fn serve(&mut self) {
        let every = Duration::from_secs(self.args.metrics_interval_secs.max(1));
        let mut last_metrics = Instant::now();
        self.metrics_writer.write();
        // At most one second between checks of the other threads and the
        // controller's configs; stop and reload signals end a sleep at once
        // (they are delivered to this thread only: main.rs).
        let tick = Duration::from_secs(1);
        while !signals::stop_requested() {
            let due = every.saturating_sub(last_metrics.elapsed());
            signals::sleep_unless_signalled(due.min(tick));
            if self.poller.is_finished() {
                log::error!("the poller thread stopped unexpectedly");
                break;
            }
            if signals::take_reload() {
                self.applier.reload(self.args.config.as_deref());
            }
            while let Ok(update) = self.updates.try_recv() {
                let cfg = update.response.config.clone();
                self.applier
                    .apply(cfg, Source::Controller(Box::new(update.response)));
            }
            if last_metrics.elapsed() >= every {
                self.metrics_writer.write();
                last_metrics = Instant::now();
            }
        }
    }

    /// Detaches, drains within `--shutdown-timeout-secs`, counts what a
    /// stuck sender leaves behind, writes the final metrics. Returns the
    /// exit code (0).
    pub fn shutdown(self) -> i32 {
        log::info!("stopping: detaching programs and draining");
        let timeout = Duration::from_secs(self.args.shutdown_timeout_secs.max(1));
        // One deadline for the poller's drain and the sender's flush: the
        // drain waits for room in the queue (at most
        // POLLER_DRAIN_WAIT_MS), and that wait is part of the timeout.
        let deadline = Instant::now() + timeout;
        let metrics = &self.metrics_writer.metrics;
        self.poller_stop.store(true, Relaxed);
        // The poller may be in its long idle sleep: interrupt it until it
        // has seen the stop (a wakeup can land just before it blocks).
        while !self.poller.is_finished() {
            signals::wake(&self.poller);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.poller.join();
        if join_within(
            self.sender,
            deadline.saturating_duration_since(Instant::now()),
        )
        .is_err()
        {
            // The sender is stuck (a sink that does not return): take what
            // it never will, and count it per observer, so the accounting
            // closes.
            let (abandoned, _) = self.leftover.take(usize::MAX, |ev| {
                if let Some(obs) = index_of(ev.kind.observer()) {
                    metrics.shutdown_abandoned[obs].fetch_add(1, Relaxed);
                }
            });
            log::error!(
                "the sender did not finish within {}s; {abandoned} queued events abandoned (counted)",
                timeout.as_secs()
            );
        }
        drop(self.leftover);
        if let Some(h) = self.client {
            // The client drains what is queued for at most the same timeout.
            let _ = join_within(h, timeout + Duration::from_secs(2));
        }
        self.metrics_writer.write();
        log_summary(metrics);
        0
    }
}

fn start_poller(
    cfg: &CompiledConfig,
    observers: Vec<loader::Observer>,
    tx: sender::Handoff,
    applier: &Applier,
    stop: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, i32> {
    let pc = poller::PollerConfig {
        poll_timeout: Duration::from_millis(u64::from(cfg.ringbuf.poll_timeout_ms)),
    };
    let (metrics, shared, stop) = (
        Arc::clone(&applier.metrics),
        applier.shared.clone(),
        Arc::clone(stop),
    );
    spawn(
        "tapio-poller",
        Box::new(move || poller::run(observers, tx, metrics, shared, stop, pc)),
    )
}

/// Joins `h` if it finishes within `timeout`; `Err` leaves it running.
fn join_within(h: JoinHandle<()>, timeout: Duration) -> Result<(), JoinHandle<()>> {
    let deadline = Instant::now() + timeout;
    while !h.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if h.is_finished() {
        let _ = h.join();
        Ok(())
    } else {
        Err(h)
    }
}

fn log_summary(m: &Metrics) {
    let k = m.kernel.lock().map(|g| *g).unwrap_or_default();
    for (o, name) in OBSERVER_NAMES.iter().enumerate() {
        if m.state(o) != ObserverState::Up {
            continue;
        }
        log::info!(
            "{name}: kernel={} ringbuf_lost={} received={} malformed={} queue_drops={} suppressed={} emitted={}",
            k.get(o, crate::abi::counter::ATTEMPTS),
            k.get(o, crate::abi::counter::RINGBUF_LOST),
            m.received[o].load(Relaxed),
            m.malformed[o].load(Relaxed),
            m.queue_drops[o].load(Relaxed),
            m.suppressed_for(o),
            m.emitted_for(o),
        );
    }
}
