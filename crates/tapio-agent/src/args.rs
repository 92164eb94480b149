//! Command-line arguments.

use argh::FromArgs;
use std::path::PathBuf;

/// Tapio node agent: emits structured kernel evidence (TCP connections,
/// block I/O, processes) from eBPF.
#[derive(FromArgs, Debug)]
pub struct Args {
    #[argh(subcommand)]
    pub command: Command,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start
pub enum Command {
    Run(RunArgs),
    Check(CheckArgs),
    Version(VersionArgs),
}

/// Run the agent: load the observers and emit JSON lines on stdout and/or
/// into the local file store, until SIGINT/SIGTERM. SIGHUP re-reads
/// --config.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "run")]
pub struct RunArgs {
    /// a CompiledConfig JSON file (from `tapio-controller compile`);
    /// without it, the builtin production-default
    #[argh(option)]
    pub config: Option<PathBuf>,

    /// directory of the local file store (hourly JSONL buckets); default
    /// $TAPIO_DATA_DIR, off when neither is set
    #[argh(option)]
    pub data_dir: Option<PathBuf>,

    /// second directory for store writes that fail on --data-dir
    #[argh(option)]
    pub fallback_dir: Option<PathBuf>,

    /// store retention by age, in hours (default 72)
    #[argh(option, default = "72")]
    pub retention_hours: u64,

    /// store retention by total size, in MiB (default 256)
    #[argh(option, default = "256")]
    pub retention_mib: u64,

    /// the Prometheus textfile (mode 0644), rewritten atomically every few
    /// seconds and at exit; default $TAPIO_METRICS_FILE, off when neither
    /// is set
    #[argh(option)]
    pub metrics_file: Option<PathBuf>,

    /// the cgroup v2 mount whose paths name each event's workload (pod,
    /// container, QoS, systemd unit); default $TAPIO_CGROUP_ROOT, else
    /// the cgroup2 mount found in /proc/self/mountinfo; "off" disables
    #[argh(option)]
    pub cgroup_root: Option<PathBuf>,

    /// seconds between metrics textfile writes (default 5)
    #[argh(option, default = "5")]
    pub metrics_interval_secs: u64,

    /// do not write events to stdout
    #[argh(switch)]
    pub no_stdout: bool,

    /// node name (default: the host name)
    #[argh(option)]
    pub node_name: Option<String>,

    /// agent id (default: /etc/machine-id, else the host name)
    #[argh(option)]
    pub agent_id: Option<String>,

    /// the controller, as http://host:port (https is refused: no TLS is
    /// built in; plaintext is for trusted networks only)
    #[argh(option)]
    pub controller: Option<String>,

    /// file holding the bearer token sent to the controller
    #[argh(option)]
    pub token_file: Option<PathBuf>,

    /// read/write timeout for controller requests, in milliseconds
    /// (default 5000; connects time out after at most 2000)
    #[argh(option, default = "5000")]
    pub controller_timeout_ms: u64,

    /// events queued for the controller before further ones are dropped
    /// (counted); default 8192
    #[argh(option, default = "8192")]
    pub controller_queue: usize,

    /// capacity of the poller -> sender queue, in events (default 4096)
    #[argh(option, default = "4096")]
    pub queue_capacity: usize,

    /// log level: error, warn, info, debug, trace (default info, or
    /// $TAPIO_LOG)
    #[argh(option)]
    pub log_level: Option<String>,

    /// longest a clean shutdown may spend flushing, in seconds (default 5)
    #[argh(option, default = "5")]
    pub shutdown_timeout_secs: u64,
}

/// Environment keys that give a path its default when the flag is absent
/// (a flag always wins). The systemd unit sets them, and
/// /etc/default/tapio-agent overrides them, so no flag is ever repeated.
pub const ENV_DATA_DIR: &str = "TAPIO_DATA_DIR";
pub const ENV_METRICS_FILE: &str = "TAPIO_METRICS_FILE";
pub const ENV_CGROUP_ROOT: &str = "TAPIO_CGROUP_ROOT";

impl RunArgs {
    /// Fills the path options from the environment where the flags were
    /// not given; an empty value means off.
    pub fn with_env_defaults(mut self, env: impl Fn(&str) -> Option<String>) -> RunArgs {
        let path = |k: &str| env(k).filter(|v| !v.trim().is_empty()).map(PathBuf::from);
        if self.data_dir.is_none() {
            self.data_dir = path(ENV_DATA_DIR);
        }
        if self.metrics_file.is_none() {
            self.metrics_file = path(ENV_METRICS_FILE);
        }
        if self.cgroup_root.is_none() {
            self.cgroup_root = path(ENV_CGROUP_ROOT);
        }
        self
    }

    /// The cgroup v2 mount for attribution: the option, else the
    /// mountinfo's cgroup2 mount; None when "off" or none is mounted.
    pub fn cgroup_root(&self) -> Option<PathBuf> {
        match &self.cgroup_root {
            Some(p) if p.as_os_str() == "off" => None,
            Some(p) => Some(p.clone()),
            None => crate::attribution::detect_root(),
        }
    }
}

/// Probe this host for everything the agent needs (kernel, BTF, bpf(),
/// map and program types, tracepoints, capabilities, bpffs, tracefs,
/// memlock) and load each observer once. Prints JSON (or a table with
/// --human). Exit 0: all required checks pass; 1: some do not; 2: usage
/// or internal error. Leaves nothing loaded.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct CheckArgs {
    /// print an aligned table instead of JSON
    #[argh(switch)]
    pub human: bool,
}

/// Print the version.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "version")]
pub struct VersionArgs {}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        match Args::from_args(&["tapio-agent"], args).map(|a| a.command) {
            Ok(Command::Run(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_win_over_the_environment_and_empty_means_off() {
        let env = |k: &str| match k {
            ENV_DATA_DIR => Some("/var/lib/tapio".to_string()),
            ENV_METRICS_FILE => Some(String::new()),
            _ => None,
        };
        let a = parse(&["run"]).with_env_defaults(env);
        assert_eq!(a.data_dir, Some(PathBuf::from("/var/lib/tapio")));
        assert_eq!(a.metrics_file, None);
        let a =
            parse(&["run", "--data-dir", "/d", "--metrics-file", "/m.prom"]).with_env_defaults(env);
        assert_eq!(a.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(a.metrics_file, Some(PathBuf::from("/m.prom")));
    }
}
