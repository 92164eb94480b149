//! The observer table: every observer the agent has, and everything about
//! it that the rest of the agent needs, in one place.
//!
//! A row's index is the observer's index in every per-observer array
//! (metrics, counters, states). The name and the events come from the wire
//! catalogue (`tapio_wire::Observer`, `tapio_wire::EventKind`); the
//! tracepoints come from the compiled object itself. Adding an observer or
//! an event kind: docs/architecture.md.

use crate::abi::counter;
use crate::event::Json;
use crate::loader::{LoadFn, loader};
use crate::observer::{Context, Rejected, network, process, storage};
use crate::prototypes::Prototypes;
use tapio_wire::Observer;

/// Limits the lean gate holds each compiled object to (read by the budget
/// test, `loader::budgets`).
#[cfg_attr(not(test), allow(dead_code))]
pub struct Budget {
    pub object_bytes: usize,
    pub maps: usize,
    /// The largest `max_entries` of a map other than the ring buffer.
    pub largest_map_entries: u32,
}

/// A kernel counter of one observer that the metrics expose on its own
/// family: the counter's index, the family and its `# HELP`.
pub struct Informational {
    pub counter: u32,
    pub family: &'static str,
    pub help: &'static str,
}

/// One observer.
pub struct Spec {
    /// Its name and identity on the wire and in metrics labels.
    pub wire: Observer,
    /// Its ring buffers' bytes, all CPUs together (`tapio_wire::limits`,
    /// split by `loader::ring_layout`).
    pub ring_bytes: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    pub budget: Budget,
    /// Opens, loads and attaches its object.
    pub load: LoadFn,
    /// The tracepoints its programs attach to, read from its object.
    pub tracepoints: fn() -> Vec<String>,
    /// One record from its ring to an event, or why not.
    pub to_event: fn(&[u8], u64, &Context<'_>) -> Result<crate::event::Event, Rejected>,
    /// Its correlation-drop counters: (counter, `reason` label of
    /// `tapio_correlation_drops_total`).
    pub correlation: &'static [(u32, &'static str)],
    /// Its informational counters, each on its own family.
    pub informational: &'static [Informational],
}

#[cfg(test)]
pub const NETWORK: usize = 0;

pub const OBSERVERS: [Spec; 3] = [
    Spec {
        wire: Observer::Network,
        ring_bytes: tapio_wire::RING_BYTES_NETWORK,
        budget: Budget {
            object_bytes: 24 * 1024,
            maps: 8,
            largest_map_entries: 16_384,
        },
        load: load_network_or_hash,
        tracepoints: network_tracepoints,
        to_event: network::to_event,
        correlation: &[
            (counter::CORR_OWNER_MISSING, "owner_state_missing"),
            (counter::CORR_STATE_FULL, "state_map_full"),
            (counter::CONNECT_ERROR_TAKEN, "connect_error_taken"),
            (
                counter::CONNECT_ERROR_UNCLASSIFIED,
                "connect_error_unclassified",
            ),
        ],
        informational: &[Informational {
            counter: counter::RESET_DEDUP,
            family: "tapio_network_resets_folded_total",
            help: "Further resets of a connection whose reset was already reported (informational).",
        }],
    },
    Spec {
        wire: Observer::Storage,
        ring_bytes: tapio_wire::RING_BYTES_STORAGE,
        budget: Budget {
            object_bytes: 20 * 1024,
            maps: 8,
            largest_map_entries: 8_192,
        },
        load: load_storage,
        tracepoints: storage_tracepoints,
        to_event: storage::to_event,
        correlation: &[
            (counter::CORR_AMBIGUOUS_IO, "ambiguous_inflight_io"),
            (counter::CORR_STATE_FULL, "inflight_map_full"),
            (counter::CORR_NO_ISSUE, "completion_without_issue"),
        ],
        informational: &[
            Informational {
                counter: counter::INFLIGHT_AT_ATTACH,
                family: "tapio_storage_inflight_at_attach_total",
                help: "Completions of requests already in flight when the agent attached (informational).",
            },
            Informational {
                counter: counter::NOT_DISPATCHED,
                family: "tapio_storage_completed_without_dispatch_total",
                help: "Requests completed without reaching the driver (informational).",
            },
            Informational {
                counter: counter::FLUSH_SEQ_END,
                family: "tapio_storage_flush_sequence_ends_total",
                help: "Second, 0-byte completions that end a flush sequence already reported (informational).",
            },
        ],
    },
    Spec {
        wire: Observer::Process,
        ring_bytes: tapio_wire::RING_BYTES_PROCESS,
        budget: Budget {
            object_bytes: 32 * 1024,
            maps: 8,
            largest_map_entries: 8_192,
        },
        load: load_process,
        tracepoints: process_tracepoints,
        to_event: process::to_event,
        correlation: &[(counter::CORR_STATE_FULL, "state_map_full")],
        informational: &[
            Informational {
                counter: counter::OOM_EXIT_DEDUP,
                family: "tapio_process_exits_folded_into_oom_total",
                help: "Process deaths reported as their oom_kill instead of a second event.",
            },
            Informational {
                counter: counter::OOM_VICTIM_EXITING,
                family: "tapio_process_oom_victims_already_exiting_total",
                help: "OOM victims the kernel chose while they were already exiting: nothing was killed, so no oom_kill; their own exit is reported (informational).",
            },
        ],
    },
];

/// How many observers there are: the length of every per-observer array.
pub const COUNT: usize = OBSERVERS.len();

/// Their names (metrics labels, logs), in table order.
pub const NAMES: [&str; COUNT] = {
    let mut n = [""; COUNT];
    let mut i = 0;
    while i < COUNT {
        n[i] = OBSERVERS[i].wire.as_str();
        i += 1;
    }
    n
};

/// An observer's row, from its wire identity (`None` for `Unknown`).
pub fn index_of(o: Observer) -> Option<usize> {
    OBSERVERS.iter().position(|s| s.wire == o)
}

/// The facts of an event: one variant per observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Facts {
    Network(network::NetFacts),
    Storage(storage::StorageFacts),
    Process(process::ProcessFacts),
}

impl Facts {
    pub fn write_json(&self, j: &mut Json<'_>) {
        match self {
            Facts::Network(f) => f.write_json(j),
            Facts::Storage(f) => f.write_json(j),
            Facts::Process(f) => f.write_json(j),
        }
    }

    /// The owner's cgroup and, where it differs, memory cgroup, for
    /// workload attribution.
    pub fn cgroups(&self) -> (Option<u64>, Option<u64>) {
        match self {
            Facts::Network(f) => (f.cgroup_id, None),
            Facts::Storage(_) => (None, None),
            Facts::Process(f) => (Some(f.cgroup_id), f.memcg_id),
        }
    }

    /// Representative facts of each observer, for tests of the event line.
    #[cfg(test)]
    pub fn sample(o: Observer) -> Facts {
        match o {
            Observer::Storage => Facts::Storage(storage::StorageFacts {
                error: Some("BLK_STS_IOERR"),
                error_code: Some(10),
                ..storage::StorageFacts::sample()
            }),
            Observer::Process => Facts::Process(process::ProcessFacts {
                exit_code: Some(3),
                signal: Some(0),
                ppid: Some(1),
                oom_score_adj: Some(-1000),
                filename: Some(Box::new([b'/'; 128])),
                ..process::ProcessFacts::sample()
            }),
            Observer::Network | Observer::Unknown => Facts::Network(network::NetFacts {
                retransmits: Some(2),
                span_ns: Some(3),
                ..network::NetFacts::sample()
            }),
        }
    }
}

/// Test hooks (crate::fault) that size a map before load: `<hook><n>`
/// gives `map` n entries (for a ring buffer, n bytes: a power of two, at
/// least a page).
fn size_from_hook(hook: &str, map: &mut libbpf_rs::OpenMapMut<'_>) {
    for n in crate::fault::values(hook) {
        if let Ok(n) = n.parse::<u32>() {
            if let Err(e) = map.set_max_entries(n) {
                log::warn!("fault hook {hook}: {e}");
            }
        }
    }
}

/// The owner slots take no memory where their programs are not loaded
/// (no BPF atomics: crate::prototypes).
fn network_prepare(open: &mut tapio_bpf::network::OpenNetworkSkel<'_>, protos: &Prototypes) {
    if !protos.bpf_atomics {
        if let Err(e) = open.maps.conn_slots.set_max_entries(1) {
            log::warn!("network: owner slots keep their full size: {e}");
        }
    }
}

/// `storage:inflight_entries:<n>`: an in-flight map a test can fill.
fn storage_prepare(open: &mut tapio_bpf::storage::OpenStorageSkel<'_>, _: &Prototypes) {
    size_from_hook("storage:inflight_entries:", &mut open.maps.inflight);
}

/// For an object loaded as it was built.
fn as_built<T>(_: &mut T, _: &Prototypes) {}

/// The network object with the owner slots where the verifier has
/// atomics; should that load fail all the same (a verifier between the
/// kernels the matrix tests that refuses some other part of them), the
/// hash programs, which every kernel runs. Logged, never silent. Test hook
/// (crate::fault) `network:slots_fail`: the first load fails.
fn load_network_or_hash(
    index: usize,
    k: &crate::abi::KernelConfig,
    protos: &Prototypes,
) -> libbpf_rs::Result<crate::loader::Observer> {
    let first = if protos.bpf_atomics && crate::fault::injected("network:slots_fail") {
        Err(libbpf_rs::Error::from(std::io::Error::other(
            "fault injected by TAPIO_FAULT_INJECT",
        )))
    } else {
        load_network(index, k, protos)
    };
    match first {
        Err(e) if protos.bpf_atomics => {
            log::warn!(
                "network: the programs with owner slots did not load ({e}): loading the ones with the hash"
            );
            load_network(
                index,
                k,
                &Prototypes {
                    bpf_atomics: false,
                    ..*protos
                },
            )
        }
        r => r,
    }
}

loader!(
    load_network,
    network_tracepoints,
    tapio_bpf::network::NetworkSkelBuilder,
    |p: &Prototypes| p.network_programs().to_vec(),
    network_prepare,
    |_: &mut tapio_bpf::network::NetworkSkel<'_>| {}
);
loader!(
    load_storage,
    storage_tracepoints,
    tapio_bpf::storage::StorageSkelBuilder,
    |p: &Prototypes| p.storage_programs().to_vec(),
    storage_prepare,
    |s: &mut tapio_bpf::storage::StorageSkel<'_>| {
        // Requests that started before this instant may have been issued
        // before the programs were attached.
        if let Some(bss) = s.maps.bss_data.as_deref_mut() {
            bss.attached_ns = crate::clock::monotonic_ns();
        }
    }
);
loader!(
    load_process,
    process_tracepoints,
    tapio_bpf::process::ProcessSkelBuilder,
    |p: &Prototypes| p.process_programs().to_vec(),
    as_built,
    |_: &mut tapio_bpf::process::ProcessSkel<'_>| {}
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_follow_the_wire_catalogue() {
        for (i, spec) in OBSERVERS.iter().enumerate() {
            assert_eq!(index_of(spec.wire), Some(i));
            assert_eq!(NAMES[i], spec.wire.as_str());
        }
        assert_eq!(NAMES[NETWORK], "network");
        // Every observer of the wire catalogue has a row, and every event
        // kind belongs to one.
        for o in Observer::ALL {
            assert!(index_of(o).is_some(), "{o:?} has no row");
        }
        assert_eq!(index_of(Observer::Unknown), None);
    }

    #[test]
    fn tracepoints_come_from_the_objects() {
        let all: Vec<Vec<String>> = OBSERVERS.iter().map(|s| (s.tracepoints)()).collect();
        assert_eq!(
            all[NETWORK],
            [
                "inet_sock_set_state",
                "tcp_receive_reset",
                "tcp_retransmit_skb"
            ]
        );
        assert!(all[1].contains(&"block_rq_complete".to_string()));
        assert!(all[2].contains(&"sched_process_free".to_string()));
        // two variants of one tracepoint are one line
        assert_eq!(
            all[1].iter().filter(|t| *t == "block_rq_complete").count(),
            1
        );
    }
}
