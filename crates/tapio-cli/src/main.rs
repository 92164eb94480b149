//! `tapio`: reads the agent's local file store and metrics textfile. It
//! never talks to the agent, and it builds and runs on any OS.

mod commands;
mod filter;
mod table;

use argh::FromArgs;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/tapio";
/// The systemd unit's default (`TAPIO_METRICS_FILE`).
pub const DEFAULT_METRICS_FILE: &str = "/run/tapio-metrics/tapio.prom";

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// A bad argument value: exit 2, like argh's own usage errors.
    Usage(String),
    /// Something failed at run time: exit 1.
    Runtime(String),
    /// The reader went away (`tapio events | head`): exit 0, quietly.
    ClosedPipe,
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Runtime(s)
    }
}

/// A failed write to stdout.
pub fn write_failed(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Failure::ClosedPipe
    } else {
        Failure::Runtime(format!("cannot write to stdout: {e}"))
    }
}

/// Tapio CLI: read the evidence a tapio-agent stored on this host.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Events(commands::events::EventsArgs),
    Summary(commands::summary::SummaryArgs),
    Tail(commands::tail::TailArgs),
    Metrics(commands::metrics::MetricsArgs),
    Version(VersionArgs),
}

/// Print the version.
#[derive(FromArgs)]
#[argh(subcommand, name = "version")]
struct VersionArgs {}

/// Where the store is: the data directory and optional fallback ones.
pub fn store_dirs(data_dir: &Option<PathBuf>, fallback: &[PathBuf]) -> Vec<PathBuf> {
    let mut v = vec![
        data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
    ];
    v.extend(fallback.iter().cloned());
    v
}

fn main() {
    let args: Args = argh::from_env();
    let out = std::io::stdout();
    let mut out = out.lock();
    let code = match args.command {
        Command::Events(a) => commands::events::run(&a, &mut out),
        Command::Summary(a) => commands::summary::run(&a, &mut out),
        Command::Tail(a) => commands::tail::run(&a, &mut out),
        Command::Metrics(a) => commands::metrics::run(&a, &mut out),
        Command::Version(_) => {
            println!("tapio {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match code {
        Ok(()) | Err(Failure::ClosedPipe) => {}
        Err(Failure::Usage(e)) => {
            eprintln!("tapio: {e}");
            std::process::exit(2);
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("tapio: {e}");
            std::process::exit(1);
        }
    }
}
