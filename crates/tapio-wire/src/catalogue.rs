//! The catalogue: every observer, and every `type` an event can have with
//! the observer it belongs to. The agent emits them; the CLI filters on
//! them; the controller's export keeps them.

use serde::{Deserialize, Serialize};

/// The observers. `Unknown` catches observers a newer agent adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observer {
    Network,
    Storage,
    Process,
    #[serde(other)]
    Unknown,
}

impl Observer {
    pub const ALL: [Observer; 3] = [Observer::Network, Observer::Storage, Observer::Process];

    pub const fn as_str(self) -> &'static str {
        match self {
            Observer::Network => "network",
            Observer::Storage => "storage",
            Observer::Process => "process",
            Observer::Unknown => "unknown",
        }
    }
}

/// Every event type Tapio emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    ConnectionRefused,
    ConnectionTimeout,
    ConnectionReset,
    ConnectionUnreachable,
    Retransmits,
    SlowIo,
    IoError,
    AbnormalExit,
    OomKill,
    Exec,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::ConnectionRefused,
        EventKind::ConnectionTimeout,
        EventKind::ConnectionReset,
        EventKind::ConnectionUnreachable,
        EventKind::Retransmits,
        EventKind::SlowIo,
        EventKind::IoError,
        EventKind::AbnormalExit,
        EventKind::OomKill,
        EventKind::Exec,
    ];

    /// The `type` string.
    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::ConnectionRefused => "kernel.network.connection_refused",
            EventKind::ConnectionTimeout => "kernel.network.connection_timeout",
            EventKind::ConnectionReset => "kernel.network.connection_reset",
            EventKind::ConnectionUnreachable => "kernel.network.connection_unreachable",
            EventKind::Retransmits => "kernel.network.retransmits",
            EventKind::SlowIo => "kernel.storage.slow_io",
            EventKind::IoError => "kernel.storage.io_error",
            EventKind::AbnormalExit => "kernel.process.abnormal_exit",
            EventKind::OomKill => "kernel.process.oom_kill",
            EventKind::Exec => "kernel.process.exec",
        }
    }

    pub fn observer(self) -> Observer {
        match self {
            EventKind::ConnectionRefused
            | EventKind::ConnectionTimeout
            | EventKind::ConnectionReset
            | EventKind::ConnectionUnreachable
            | EventKind::Retransmits => Observer::Network,
            EventKind::SlowIo | EventKind::IoError => Observer::Storage,
            EventKind::AbnormalExit | EventKind::OomKill | EventKind::Exec => Observer::Process,
        }
    }

    pub fn from_type_name(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.type_name() == s)
    }
}
