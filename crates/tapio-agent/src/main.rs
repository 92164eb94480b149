//! tapio-agent: the node-local observer.
//!
//! Threads (docs/architecture.md):
//! - main: arguments, config, signals, kernel config writes, metrics file;
//! - poller: ring buffers -> bounded channel (never blocks);
//! - sender: channel -> batches -> JSON -> sinks.

mod args;
mod attribution;
mod check;
mod client;
mod clock;
mod config;
mod host;
mod kconfig;
mod loader;
mod metrics;
mod observer;
mod poller;
mod prototypes;
mod sender;
mod signals;
mod sink;
mod state;
#[cfg(test)]
mod test_skip;

use args::{Args, Command, RunArgs};
use metrics::{Metrics, OBSERVER_NAMES, SinkId};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};
use tapio_common::abi::OBS_NODE;
use tapio_common::sink::Sink;
use tapio_wire::ObserverState;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let strs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let args =
        match <Args as argh::FromArgs>::from_args(&["tapio-agent"], strs.get(1..).unwrap_or(&[])) {
            Ok(a) => a,
            Err(early) => {
                // --help is a success; a usage error exits 2 (1 means "a check
                // failed" for `check`).
                match early.status {
                    Ok(()) => {
                        println!("{}", early.output);
                        std::process::exit(0)
                    }
                    Err(()) => {
                        eprintln!("{}", early.output);
                        std::process::exit(2)
                    }
                }
            }
        };
    match args.command {
        Command::Version(_) => println!("tapio-agent {}", env!("CARGO_PKG_VERSION")),
        Command::Check(c) => std::process::exit(run_check(&c)),
        Command::Run(run_args) => std::process::exit(run(run_args)),
    }
}

fn run_check(c: &args::CheckArgs) -> i32 {
    // Test hook: TAPIO_FAULT_INJECT=check:hide_tracepoint:<name>.
    let hidden: Vec<String> = std::env::var("TAPIO_FAULT_INJECT")
        .unwrap_or_default()
        .split(',')
        .filter_map(|f| f.strip_prefix("check:hide_tracepoint:").map(String::from))
        .collect();
    let checks = check::run_all(&hidden);
    if c.human {
        print!("{}", check::to_table(&checks));
    } else {
        match serde_json::to_string_pretty(&check::to_json(&checks)) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tapio-agent check: {e}");
                return 2;
            }
        }
    }
    check::exit_code(&checks)
}

/// Exit codes: 0 clean stop, 1 nothing could be observed, 2 bad
/// configuration or arguments.
fn run(a: RunArgs) -> i32 {
    let a = a.with_env_defaults(|k| std::env::var(k).ok());
    let level = a
        .log_level
        .clone()
        .or_else(|| std::env::var("TAPIO_LOG").ok())
        .map(|s| tapio_common::logger::parse_level(&s))
        .unwrap_or(Some(log::LevelFilter::Info));
    let Some(level) = level else {
        eprintln!("tapio-agent: --log-level must be one of error, warn, info, debug, trace");
        return 2;
    };
    tapio_common::logger::init(level);
    signals::install_handlers();

    if a.queue_capacity == 0 || a.queue_capacity > 1 << 20 {
        log::error!("--queue-capacity must be between 1 and 1048576");
        return 2;
    }
    let cfg = match config::initial(a.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("config: {e}");
            return 2;
        }
    };
    let endpoint = match a
        .controller
        .as_deref()
        .map(client::http::parse_url)
        .transpose()
    {
        Ok(e) => e,
        Err(e) => {
            log::error!("--controller: {e}");
            return 2;
        }
    };
    let token = match &a.token_file {
        None => None,
        Some(p) => match std::fs::read_to_string(p)
            .map_err(|e| e.to_string())
            .and_then(client::http::Token::new)
        {
            Ok(t) => Some(t),
            Err(e) => {
                // The reason never includes the file's content.
                log::error!("--token-file {}: {e}", p.display());
                return 2;
            }
        },
    };
    if a.controller_queue == 0 || a.controller_queue > 1 << 20 {
        log::error!("--controller-queue must be between 1 and 1048576");
        return 2;
    }
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
    let mut generation: u32 = 1;
    metrics.config_generation.store(generation, Relaxed);
    if let Err(e) = loader::raise_memlock() {
        log::warn!(
            "cannot raise RLIMIT_MEMLOCK ({e}); fine on kernels >= 5.11, which charge BPF memory to the memory cgroup"
        );
    }

    let (mut observers, failed) = loader::load_all(&kconfig::to_kernel(&cfg, generation));
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
    if cfg.node.enabled {
        log::warn!(
            "observer node: unsupported: {}",
            observer::node::unsupported_reason()
        );
        metrics.set_state(OBS_NODE, ObserverState::Unsupported);
    } else {
        metrics.set_state(OBS_NODE, ObserverState::Disabled);
    }
    if observers.is_empty() {
        log::error!(
            "no observer could be loaded; is this a Linux >= 5.10 host with BTF, run as root or with CAP_BPF+CAP_PERFMON?"
        );
        return 1;
    }
    let config_writers = loader::ConfigWriters(
        observers
            .iter()
            .filter_map(|o| libbpf_rs::MapHandle::try_from(&o.config_map).ok())
            .collect(),
    );
    let program_readers = loader::ProgramReaders::from_observers(&mut observers);
    let counter_readers = loader::CounterReaders(
        observers
            .iter()
            .filter_map(|o| {
                libbpf_rs::MapHandle::try_from(&o.counters_map)
                    .ok()
                    .map(|m| (o.index, m))
            })
            .collect(),
    );

    let shared = state::SharedConfig::new(cfg.clone(), generation);
    let (tx, rx) = crossbeam_channel::bounded(a.queue_capacity);
    // Kept to count what a stuck sender leaves in the queue at shutdown.
    let rx_leftover = rx.clone();

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
            Box::new(sink::file::FileSink::new(sc).with_metrics(Arc::clone(&metrics))),
        ));
    }

    // The controller client: its own thread behind a bounded queue.
    let applied = Arc::new(std::sync::Mutex::new(client::Applied::default()));
    let (update_tx, update_rx) = crossbeam_channel::bounded::<client::ConfigUpdate>(4);
    let client_handle = match endpoint {
        None => None,
        Some(ep) => {
            let (ctl_tx, ctl_rx) = crossbeam_channel::bounded(a.controller_queue);
            sinks.push((
                SinkId::Controller,
                Box::new(client::ControllerSink::new(ctl_tx)),
            ));
            log::info!(
                "controller {ep}: plaintext HTTP (trusted network only){}",
                if token.is_some() {
                    ", bearer token"
                } else {
                    ""
                }
            );
            let ct = client::ClientThread {
                http: {
                    let mut c = client::http::Client::new(ep, token);
                    let t = Duration::from_millis(a.controller_timeout_ms.clamp(10, 600_000));
                    c.io_timeout = t;
                    c.connect_timeout = t.min(Duration::from_secs(2));
                    c
                },
                cfg: client::ClientConfig {
                    agent_id: agent_id.clone(),
                    node_name: node_name.clone(),
                    instance_id: instance_id.clone(),
                    kernel_release: host::kernel_release(),
                    max_attempts: 5,
                    backoff_base: Duration::from_millis(200),
                    backoff_max: Duration::from_secs(10),
                    drain_timeout: Duration::from_secs(a.shutdown_timeout_secs.max(1)),
                },
                rx: ctl_rx,
                metrics: Arc::clone(&metrics),
                shared: shared.clone(),
                applied: Arc::clone(&applied),
                updates: update_tx,
                started: Instant::now(),
            };
            match std::thread::Builder::new()
                .name("tapio-client".into())
                .spawn(move || ct.run())
            {
                Ok(h) => Some(h),
                Err(e) => {
                    log::error!("cannot start the controller client thread: {e}");
                    return 1;
                }
            }
        }
    };

    let sender = sender::SenderThread {
        rx,
        sinks,
        metrics: Arc::clone(&metrics),
        cfg: sender::SenderConfig {
            instance_id: instance_id.clone(),
            max_events: cfg.batching.max_events as usize,
            flush_interval: Duration::from_millis(u64::from(cfg.batching.flush_interval_ms)),
        },
    };
    let sender_handle = match std::thread::Builder::new()
        .name("tapio-sender".into())
        .spawn(move || sender.run())
    {
        Ok(h) => h,
        Err(e) => {
            log::error!("cannot start the sender thread: {e}");
            return 1;
        }
    };
    let poller_stop = Arc::new(AtomicBool::new(false));
    let poller_handle = {
        let metrics = Arc::clone(&metrics);
        let shared = shared.clone();
        let stop = Arc::clone(&poller_stop);
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
        let pc = poller::PollerConfig {
            poll_timeout: Duration::from_millis(u64::from(cfg.ringbuf.poll_timeout_ms)),
            cgroup_root,
        };
        std::thread::Builder::new()
            .name("tapio-poller".into())
            .spawn(move || poller::run(observers, tx, metrics, shared, stop, pc))
    };
    let poller_handle = match poller_handle {
        Ok(h) => h,
        Err(e) => {
            log::error!("cannot start the poller thread: {e}");
            return 1;
        }
    };

    let write_metrics = |metrics: &Metrics| {
        if let Ok(mut k) = metrics.kernel.lock() {
            counter_readers.read_into(&mut k);
        }
        metrics.set_recursion_misses(program_readers.read());
        if let Some(p) = &a.metrics_file {
            if let Err(e) = metrics.write_textfile(p) {
                log::warn!("metrics file {}: {e}", p.display());
            }
        }
    };

    let metrics_every = Duration::from_secs(a.metrics_interval_secs.max(1));
    let mut last_metrics = Instant::now();
    write_metrics(&metrics);
    while !signals::stop_requested() {
        std::thread::sleep(Duration::from_millis(250));
        if poller_handle.is_finished() {
            log::error!("the poller thread stopped unexpectedly");
            break;
        }
        if signals::take_reload() {
            match &a.config {
                None => log::info!("SIGHUP: no --config file; the builtin defaults stay"),
                Some(path) => match config::load_file(path) {
                    Ok(new) => match state::apply_generation(&shared, new, |c, g| {
                        config_writers.write(&kconfig::to_kernel(c, g))
                    }) {
                        Ok(g) => {
                            generation = g;
                            metrics.config_generation.store(g, Relaxed);
                            metrics.config_reloads_ok.fetch_add(1, Relaxed);
                            log::info!(
                                "SIGHUP: applied {} as config generation {g}",
                                path.display()
                            );
                        }
                        Err(failures) => {
                            metrics.config_reloads_failed.fetch_add(1, Relaxed);
                            log::error!(
                                "SIGHUP: {failures} kernel config writes failed; kept generation {generation}"
                            );
                        }
                    },
                    Err(e) => {
                        metrics.config_reloads_failed.fetch_add(1, Relaxed);
                        log::error!(
                            "SIGHUP: rejected new config, keeping generation {generation}: {e}"
                        );
                    }
                },
            }
        }
        while let Ok(update) = update_rx.try_recv() {
            let cr = update.response;
            match state::apply_generation(&shared, cr.config, |c, g| {
                config_writers.write(&kconfig::to_kernel(c, g))
            }) {
                Ok(g) => {
                    generation = g;
                    metrics.config_generation.store(g, Relaxed);
                    // What heartbeats report: only a config that reached
                    // every loaded object.
                    if let Ok(mut ap) = applied.lock() {
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
                Err(failures) => log::error!(
                    "controller config {}: {failures} kernel config writes failed; kept generation {generation}, not reported as applied",
                    cr.config_hash
                ),
            }
        }
        if last_metrics.elapsed() >= metrics_every {
            write_metrics(&metrics);
            last_metrics = Instant::now();
        }
    }

    log::info!("stopping: detaching programs and draining");
    poller_stop.store(true, Relaxed);
    let deadline = Instant::now() + Duration::from_secs(a.shutdown_timeout_secs.max(1));
    let _ = poller_handle.join();
    while !sender_handle.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if sender_handle.is_finished() {
        let _ = sender_handle.join();
    } else {
        // The sender is stuck (a sink that does not return): take what it
        // never will, and count it per observer, so the accounting closes.
        let mut abandoned = 0u64;
        while let Ok(ev) = rx_leftover.try_recv() {
            let obs = metrics::observer_index(ev.kind.observer());
            metrics.shutdown_abandoned[obs].fetch_add(1, Relaxed);
            abandoned += 1;
        }
        log::error!(
            "the sender did not finish within {}s; {abandoned} queued events abandoned (counted)",
            a.shutdown_timeout_secs
        );
    }
    drop(rx_leftover);
    if let Some(h) = client_handle {
        // The client drains what is queued for at most the same timeout.
        let deadline = Instant::now() + Duration::from_secs(a.shutdown_timeout_secs.max(1) + 2);
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    write_metrics(&metrics);
    log_summary(&metrics);
    0
}

fn log_summary(m: &Metrics) {
    let k = m.kernel.lock().map(|g| *g).unwrap_or_default();
    for (o, name) in OBSERVER_NAMES.iter().enumerate() {
        if m.state(o) != ObserverState::Up {
            continue;
        }
        log::info!(
            "{name}: kernel={} ringbuf_lost={} received={} malformed={} queue_drops={} suppressed={} emitted={}",
            k.get(o, tapio_common::abi::counter::ATTEMPTS),
            k.get(o, tapio_common::abi::counter::RINGBUF_LOST),
            m.received[o].load(Relaxed),
            m.malformed[o].load(Relaxed),
            m.queue_drops[o].load(Relaxed),
            m.suppressed_for(o),
            m.emitted_for(o),
        );
    }
}
