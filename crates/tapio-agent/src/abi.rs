//! Rust mirror of `include/tapio_abi.h`, and the safe record parser.
//!
//! The C header is the single source of truth. Each struct here is
//! `#[repr(C)]` with the same fields, and the `const` assertions below pin
//! every size and offset to the numbers the header asserts with
//! `_Static_assert`. The agent additionally checks these mirrors against the
//! skeleton types libbpf-cargo generates from the compiled objects.

use std::mem::{offset_of, size_of};

pub const ABI_VERSION: u32 = 2;
pub const COMM_LEN: usize = 16;
pub const FILENAME_LEN: usize = 128;
pub const MAX_IGNORED_EXIT_CODES: usize = 16;

/// `enum tapio_observer`: index of an observer in per-observer arrays.
pub const OBS_NETWORK: usize = 0;
pub const OBS_STORAGE: usize = 1;
pub const OBS_PROCESS: usize = 2;
pub const OBS_COUNT: usize = 3;

/// `enum tapio_event_type`
pub mod event_type {
    pub const NET_CONN_REFUSED: u16 = 1;
    pub const NET_CONN_TIMEOUT: u16 = 2;
    pub const NET_CONN_RESET: u16 = 3;
    pub const NET_RETRANSMITS: u16 = 4;
    pub const STORAGE_SLOW_IO: u16 = 16;
    pub const STORAGE_IO_ERROR: u16 = 17;
    pub const PROC_ABNORMAL_EXIT: u16 = 32;
    pub const PROC_OOM_KILL: u16 = 33;
    pub const PROC_EXEC: u16 = 34;
}

/// `enum tapio_counter`: indexes of each object's per-CPU counter array.
pub mod counter {
    pub const ATTEMPTS: u32 = 0;
    pub const RINGBUF_LOST: u32 = 1;
    pub const ABI_MISMATCH: u32 = 2;
    pub const CORR_OWNER_MISSING: u32 = 3;
    pub const CORR_STATE_FULL: u32 = 4;
    pub const CORR_AMBIGUOUS_IO: u32 = 5;
    pub const CORR_NO_ISSUE: u32 = 6;
    pub const OOM_EXIT_DEDUP: u32 = 7;
    pub const INFLIGHT_AT_ATTACH: u32 = 8;
    pub const NOT_DISPATCHED: u32 = 9;
    pub const FLUSH_SEQ_END: u32 = 10;
    pub const RESET_DEDUP: u32 = 11;
    pub const MAX: u32 = 16;
}

/// `TAPIO_TEST_*` (tapio_config.test_flags)
pub const TEST_DOUBLE_ISSUE: u8 = 1 << 0;

/// `TAPIO_F_*`
pub const F_OWNER_KNOWN: u8 = 1 << 0;
pub const F_CGROUP_KNOWN: u8 = 1 << 1;
pub const F_CRITICAL: u8 = 1 << 2;
pub const F_MM_KNOWN: u8 = 1 << 3;
pub const F_ERRNO: u8 = 1 << 4;

/// `enum tapio_storage_op`
pub mod storage_op {
    pub const READ: u8 = 0;
    pub const WRITE: u8 = 1;
    pub const FLUSH: u8 = 2;
    pub const DISCARD: u8 = 3;
    pub const OTHER: u8 = 4;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub size: u16,
    pub config_generation: u32,
    pub timestamp_ns: u64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub pid: u32,
    pub retransmits: u32,
    pub span_ns: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub flags: u8,
    pub state: u8,
    pub syn_retries: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub sector: u64,
    pub latency_ns: u64,
    pub bytes: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub pid: u32,
    pub op: u8,
    pub error: u8,
    pub flags: u8,
    pub _pad: [u8; 5],
    pub comm: [u8; COMM_LEN],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessEvent {
    pub hdr: EventHeader,
    pub cgroup_id: u64,
    pub memcg_id: u64,
    pub total_vm_pages: u64,
    pub rss_pages: u64,
    pub pid: u32,
    pub ppid: u32,
    pub exit_code: i32,
    pub signal: u32,
    pub oom_score_adj: i16,
    pub flags: u8,
    pub _pad: [u8; 5],
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; FILENAME_LEN],
}

/// `struct tapio_config`: written by the agent, read by every program.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelConfig {
    pub abi_version: u32,
    pub generation: u32,
    pub network_enabled: u8,
    pub storage_enabled: u8,
    pub process_enabled: u8,
    pub exec_enabled: u8,
    /// `TAPIO_TEST_*` fault injection; 0 in production.
    pub test_flags: u8,
    pub _pad0: [u8; 3],
    pub retransmit_window_ns: u64,
    pub slow_io_threshold_ns: u64,
    pub ringbuf_wakeup_bytes: u32,
    pub ignore_exit_count: u32,
    pub ignore_exit_codes: [i32; MAX_IGNORED_EXIT_CODES],
    pub slow_io_critical_ns: u64,
}

impl KernelConfig {
    /// The little-endian/native bytes the BPF map holds.
    pub fn to_bytes(self) -> [u8; size_of::<KernelConfig>()] {
        let mut out = [0u8; size_of::<KernelConfig>()];
        let mut put = |off: usize, b: &[u8]| out[off..off + b.len()].copy_from_slice(b);
        put(
            offset_of!(KernelConfig, abi_version),
            &self.abi_version.to_ne_bytes(),
        );
        put(
            offset_of!(KernelConfig, generation),
            &self.generation.to_ne_bytes(),
        );
        put(
            offset_of!(KernelConfig, network_enabled),
            &[self.network_enabled],
        );
        put(
            offset_of!(KernelConfig, storage_enabled),
            &[self.storage_enabled],
        );
        put(
            offset_of!(KernelConfig, process_enabled),
            &[self.process_enabled],
        );
        put(offset_of!(KernelConfig, exec_enabled), &[self.exec_enabled]);
        put(offset_of!(KernelConfig, test_flags), &[self.test_flags]);
        put(
            offset_of!(KernelConfig, retransmit_window_ns),
            &self.retransmit_window_ns.to_ne_bytes(),
        );
        put(
            offset_of!(KernelConfig, slow_io_threshold_ns),
            &self.slow_io_threshold_ns.to_ne_bytes(),
        );
        put(
            offset_of!(KernelConfig, ringbuf_wakeup_bytes),
            &self.ringbuf_wakeup_bytes.to_ne_bytes(),
        );
        put(
            offset_of!(KernelConfig, ignore_exit_count),
            &self.ignore_exit_count.to_ne_bytes(),
        );
        let base = offset_of!(KernelConfig, ignore_exit_codes);
        for (i, code) in self.ignore_exit_codes.iter().enumerate() {
            put(base + i * 4, &code.to_ne_bytes());
        }
        put(
            offset_of!(KernelConfig, slow_io_critical_ns),
            &self.slow_io_critical_ns.to_ne_bytes(),
        );
        out
    }
}

// ---- layout pins: the same numbers as the _Static_asserts in tapio_abi.h
const _: () = {
    assert!(size_of::<EventHeader>() == 16);
    assert!(offset_of!(EventHeader, kind) == 0);
    assert!(offset_of!(EventHeader, size) == 2);
    assert!(offset_of!(EventHeader, config_generation) == 4);
    assert!(offset_of!(EventHeader, timestamp_ns) == 8);

    assert!(size_of::<NetEvent>() == 104);
    assert!(offset_of!(NetEvent, cgroup_id) == 16);
    assert!(offset_of!(NetEvent, pid) == 24);
    assert!(offset_of!(NetEvent, retransmits) == 28);
    assert!(offset_of!(NetEvent, span_ns) == 32);
    assert!(offset_of!(NetEvent, saddr) == 40);
    assert!(offset_of!(NetEvent, daddr) == 56);
    assert!(offset_of!(NetEvent, sport) == 72);
    assert!(offset_of!(NetEvent, dport) == 74);
    assert!(offset_of!(NetEvent, family) == 76);
    assert!(offset_of!(NetEvent, flags) == 78);
    assert!(offset_of!(NetEvent, state) == 79);
    assert!(offset_of!(NetEvent, syn_retries) == 80);
    assert!(offset_of!(NetEvent, comm) == 88);

    assert!(size_of::<StorageEvent>() == 80);
    assert!(offset_of!(StorageEvent, cgroup_id) == 16);
    assert!(offset_of!(StorageEvent, sector) == 24);
    assert!(offset_of!(StorageEvent, latency_ns) == 32);
    assert!(offset_of!(StorageEvent, bytes) == 40);
    assert!(offset_of!(StorageEvent, dev_major) == 44);
    assert!(offset_of!(StorageEvent, dev_minor) == 48);
    assert!(offset_of!(StorageEvent, pid) == 52);
    assert!(offset_of!(StorageEvent, op) == 56);
    assert!(offset_of!(StorageEvent, error) == 57);
    assert!(offset_of!(StorageEvent, flags) == 58);
    assert!(offset_of!(StorageEvent, comm) == 64);

    assert!(size_of::<ProcessEvent>() == 216);
    assert!(offset_of!(ProcessEvent, cgroup_id) == 16);
    assert!(offset_of!(ProcessEvent, memcg_id) == 24);
    assert!(offset_of!(ProcessEvent, total_vm_pages) == 32);
    assert!(offset_of!(ProcessEvent, rss_pages) == 40);
    assert!(offset_of!(ProcessEvent, pid) == 48);
    assert!(offset_of!(ProcessEvent, ppid) == 52);
    assert!(offset_of!(ProcessEvent, exit_code) == 56);
    assert!(offset_of!(ProcessEvent, signal) == 60);
    assert!(offset_of!(ProcessEvent, oom_score_adj) == 64);
    assert!(offset_of!(ProcessEvent, flags) == 66);
    assert!(offset_of!(ProcessEvent, comm) == 72);
    assert!(offset_of!(ProcessEvent, filename) == 88);

    assert!(size_of::<KernelConfig>() == 112);
    assert!(offset_of!(KernelConfig, abi_version) == 0);
    assert!(offset_of!(KernelConfig, generation) == 4);
    assert!(offset_of!(KernelConfig, network_enabled) == 8);
    assert!(offset_of!(KernelConfig, storage_enabled) == 9);
    assert!(offset_of!(KernelConfig, process_enabled) == 10);
    assert!(offset_of!(KernelConfig, exec_enabled) == 11);
    assert!(offset_of!(KernelConfig, test_flags) == 12);
    assert!(offset_of!(KernelConfig, retransmit_window_ns) == 16);
    assert!(offset_of!(KernelConfig, slow_io_threshold_ns) == 24);
    assert!(offset_of!(KernelConfig, ringbuf_wakeup_bytes) == 32);
    assert!(offset_of!(KernelConfig, ignore_exit_count) == 36);
    assert!(offset_of!(KernelConfig, ignore_exit_codes) == 40);
    assert!(offset_of!(KernelConfig, slow_io_critical_ns) == 104);
};

/// A parsed, structurally valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Network(NetEvent),
    Storage(StorageEvent),
    Process(ProcessEvent),
}

impl Record {
    pub fn header(&self) -> &EventHeader {
        match self {
            Record::Network(e) => &e.hdr,
            Record::Storage(e) => &e.hdr,
            Record::Process(e) => &e.hdr,
        }
    }
}

/// Why a record was rejected. Each one is counted as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the header, or than its type's struct.
    Short { len: usize },
    /// Longer than its type's struct.
    Oversized { len: usize, expected: usize },
    /// `hdr.size` disagrees with the record's length.
    SizeMismatch { declared: u16, len: usize },
    /// A type this agent does not know.
    UnknownType(u16),
    /// A field outside its domain (family, op, ...).
    BadField(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::Short { len } => write!(f, "short record ({len} bytes)"),
            ParseError::Oversized { len, expected } => {
                write!(f, "oversized record ({len} bytes, expected {expected})")
            }
            ParseError::SizeMismatch { declared, len } => {
                write!(f, "header size {declared} but record is {len} bytes")
            }
            ParseError::UnknownType(t) => write!(f, "unknown record type {t}"),
            ParseError::BadField(name) => write!(f, "field {name} out of range"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Plain-old-data: every bit pattern is a valid value (integers and byte
/// arrays only, no padding the compiler may assume anything about).
///
/// # Safety
/// Implement only for `#[repr(C)]` structs whose fields are all integers or
/// arrays of integers.
unsafe trait Pod: Copy {}
unsafe impl Pod for EventHeader {}
unsafe impl Pod for NetEvent {}
unsafe impl Pod for StorageEvent {}
unsafe impl Pod for ProcessEvent {}

/// Copies a `T` out of exactly `size_of::<T>()` bytes.
fn read_exact<T: Pod>(bytes: &[u8]) -> Result<T, ParseError> {
    let expected = size_of::<T>();
    if bytes.len() < expected {
        return Err(ParseError::Short { len: bytes.len() });
    }
    if bytes.len() > expected {
        return Err(ParseError::Oversized {
            len: bytes.len(),
            expected,
        });
    }
    // SAFETY: the length is exactly size_of::<T>() (checked above), the read
    // is unaligned-safe, and T: Pod accepts every bit pattern.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The observer index a record type belongs to, if the type is known.
pub fn observer_of_type(kind: u16) -> Option<usize> {
    use event_type::*;
    match kind {
        NET_CONN_REFUSED | NET_CONN_TIMEOUT | NET_CONN_RESET | NET_RETRANSMITS => Some(OBS_NETWORK),
        STORAGE_SLOW_IO | STORAGE_IO_ERROR => Some(OBS_STORAGE),
        PROC_ABNORMAL_EXIT | PROC_OOM_KILL | PROC_EXEC => Some(OBS_PROCESS),
        _ => None,
    }
}

/// Parses one ring-buffer record. Never panics, never reads past `bytes`.
pub fn parse_record(bytes: &[u8]) -> Result<Record, ParseError> {
    let hdr: EventHeader = match bytes.get(..size_of::<EventHeader>()) {
        Some(h) => read_exact(h)?,
        None => return Err(ParseError::Short { len: bytes.len() }),
    };
    if usize::from(hdr.size) != bytes.len() {
        return Err(ParseError::SizeMismatch {
            declared: hdr.size,
            len: bytes.len(),
        });
    }
    let rec = match observer_of_type(hdr.kind) {
        Some(OBS_NETWORK) => {
            let e: NetEvent = read_exact(bytes)?;
            if e.family != AF_INET && e.family != AF_INET6 {
                return Err(ParseError::BadField("family"));
            }
            if e.hdr.kind == event_type::NET_RETRANSMITS && e.retransmits == 0 {
                return Err(ParseError::BadField("retransmits"));
            }
            Record::Network(e)
        }
        Some(OBS_STORAGE) => {
            let e: StorageEvent = read_exact(bytes)?;
            if e.op > storage_op::OTHER {
                return Err(ParseError::BadField("op"));
            }
            if e.hdr.kind == event_type::STORAGE_IO_ERROR && e.error == 0 {
                return Err(ParseError::BadField("error"));
            }
            Record::Storage(e)
        }
        Some(OBS_PROCESS) => {
            let e: ProcessEvent = read_exact(bytes)?;
            if e.pid == 0 {
                return Err(ParseError::BadField("pid"));
            }
            Record::Process(e)
        }
        _ => return Err(ParseError::UnknownType(hdr.kind)),
    };
    Ok(rec)
}

/// The bytes of a record, for tests and fuzzing.
#[cfg(test)]
pub fn record_bytes<T: Copy>(rec: &T) -> Vec<u8> {
    let len = size_of::<T>();
    let mut out = vec![0u8; len];
    // SAFETY: copying the object representation of a Copy value into a
    // buffer of exactly its size.
    unsafe { std::ptr::copy_nonoverlapping((rec as *const T).cast::<u8>(), out.as_mut_ptr(), len) };
    out
}

/// A NUL-terminated (or full-length) C string field as text; invalid UTF-8
/// is replaced, never trusted.
pub fn c_str(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

#[cfg(test)]
impl NetEvent {
    pub fn zeroed() -> Self {
        NetEvent {
            hdr: EventHeader::default(),
            cgroup_id: 0,
            pid: 0,
            retransmits: 0,
            span_ns: 0,
            saddr: [0; 16],
            daddr: [0; 16],
            sport: 0,
            dport: 0,
            family: AF_INET,
            flags: 0,
            state: 0,
            syn_retries: 0,
            _pad: 0,
            comm: [0; COMM_LEN],
        }
    }
}

#[cfg(test)]
impl StorageEvent {
    pub fn zeroed() -> Self {
        StorageEvent {
            hdr: EventHeader::default(),
            cgroup_id: 0,
            sector: 0,
            latency_ns: 0,
            bytes: 0,
            dev_major: 0,
            dev_minor: 0,
            pid: 0,
            op: 0,
            error: 0,
            flags: 0,
            _pad: [0; 5],
            comm: [0; COMM_LEN],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(kind: u16) -> NetEvent {
        let mut e = NetEvent::zeroed();
        e.hdr = EventHeader {
            kind,
            size: size_of::<NetEvent>() as u16,
            config_generation: 3,
            timestamp_ns: 42,
        };
        e.dport = 8080;
        e
    }

    #[test]
    fn parses_a_valid_record() {
        let e = net(event_type::NET_CONN_REFUSED);
        let r = parse_record(&record_bytes(&e)).unwrap();
        assert_eq!(r, Record::Network(e));
        assert_eq!(r.header().config_generation, 3);
    }

    #[test]
    fn rejects_short_oversized_unknown_and_mismatched() {
        let e = net(event_type::NET_CONN_REFUSED);
        let b = record_bytes(&e);
        assert_eq!(parse_record(&b[..10]), Err(ParseError::Short { len: 10 }));
        assert_eq!(parse_record(&[]), Err(ParseError::Short { len: 0 }));
        // header claims the short length: struct too short
        let mut short = b[..50].to_vec();
        short[2..4].copy_from_slice(&50u16.to_ne_bytes());
        assert_eq!(parse_record(&short), Err(ParseError::Short { len: 50 }));
        let mut long = b.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(
            parse_record(&long),
            Err(ParseError::SizeMismatch {
                declared: 104,
                len: 112
            })
        );
        long[2..4].copy_from_slice(&112u16.to_ne_bytes());
        assert_eq!(
            parse_record(&long),
            Err(ParseError::Oversized {
                len: 112,
                expected: 104
            })
        );
        let mut unknown = b.clone();
        unknown[0..2].copy_from_slice(&999u16.to_ne_bytes());
        assert_eq!(parse_record(&unknown), Err(ParseError::UnknownType(999)));
    }

    #[test]
    fn rejects_out_of_domain_fields() {
        let mut e = net(event_type::NET_CONN_REFUSED);
        e.family = 7;
        assert_eq!(
            parse_record(&record_bytes(&e)),
            Err(ParseError::BadField("family"))
        );
        let e = net(event_type::NET_RETRANSMITS);
        assert_eq!(
            parse_record(&record_bytes(&e)),
            Err(ParseError::BadField("retransmits"))
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A small deterministic generator: every length 0..300, many seeds.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..300usize {
            for _ in 0..50 {
                let mut buf = vec![0u8; len];
                for b in buf.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
                // sometimes make the header consistent so deeper checks run
                if len >= 4 && x % 3 == 0 {
                    buf[2..4].copy_from_slice(&(len as u16).to_ne_bytes());
                    let kinds = [1u16, 2, 3, 4, 16, 17, 32, 33, 34, 48];
                    buf[0..2].copy_from_slice(&kinds[(x % 10) as usize].to_ne_bytes());
                }
                let _ = parse_record(&buf);
            }
        }
    }

    #[test]
    fn config_bytes_follow_offsets() {
        let mut c = KernelConfig {
            abi_version: ABI_VERSION,
            generation: 7,
            network_enabled: 1,
            retransmit_window_ns: 5,
            ringbuf_wakeup_bytes: 65536,
            ignore_exit_count: 2,
            ..Default::default()
        };
        c.ignore_exit_codes[1] = 143;
        let b = c.to_bytes();
        assert_eq!(&b[0..4], &2u32.to_ne_bytes(), "TAPIO_ABI_VERSION 2");
        assert_eq!(&b[4..8], &7u32.to_ne_bytes());
        assert_eq!(b[8], 1);
        assert_eq!(&b[16..24], &5u64.to_ne_bytes());
        assert_eq!(&b[32..36], &65536u32.to_ne_bytes());
        assert_eq!(&b[44..48], &143i32.to_ne_bytes());
        assert_eq!(b.to_vec(), record_bytes_cfg(&c));
    }

    fn record_bytes_cfg(c: &KernelConfig) -> Vec<u8> {
        record_bytes(c)
    }

    #[test]
    fn c_strings_are_bounded_and_lossy() {
        assert_eq!(c_str(b"curl\0\0garbage"), "curl");
        assert_eq!(c_str(&[b'a'; 16]), "a".repeat(16));
        assert_eq!(c_str(&[0xff, b'x', 0]), "\u{fffd}x");
    }
}
