//! tapio-agent: the node-local observer.
//!
//! Threads (docs/architecture.md), started and stopped by `lifecycle`:
//! - main: arguments, config, signals, kernel config writes, metrics file;
//! - poller: ring buffers -> bounded channel (never blocks);
//! - sender: channel -> batches -> JSON -> sinks.

mod abi;
mod args;
mod attribution;
mod check;
mod client;
mod clock;
mod config;
mod event;
mod fault;
mod host;
mod lifecycle;
mod loader;
mod mapped;
mod metrics;
mod observer;
mod observers;
mod poller;
mod prototypes;
mod sender;
mod sink;
#[cfg(test)]
mod test_skip;

use args::{Args, Command, RunArgs};

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
        Command::Version(_) => println!(
            "tapio-agent {}{}",
            env!("CARGO_PKG_VERSION"),
            if fault::COMPILED { " +test-hooks" } else { "" }
        ),
        Command::Check(c) => std::process::exit(run_check(&c)),
        Command::Run(run_args) => std::process::exit(run(run_args)),
    }
}

fn run_check(c: &args::CheckArgs) -> i32 {
    // Test hook (crate::fault): report these tracepoints as missing.
    let hidden = fault::values("check:hide_tracepoint:");
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
        return lifecycle::EXIT_USAGE;
    };
    tapio_common::logger::init(level);
    fault::log_at_start();
    tapio_common::signals::install_handlers(tapio_common::signals::Interrupted::ReturnEintr);
    tapio_common::signals::install_wakeup();
    // Stop and reload signals reach the main thread, which sleeps until
    // its next periodic task or one of them.
    match tapio_common::signals::spawning_without_signals(|| lifecycle::Running::start(a)) {
        Ok(mut agent) => {
            agent.serve();
            agent.shutdown()
        }
        Err(code) => code,
    }
}
