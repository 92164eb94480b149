//! Rust mirror of what all observers share in `include/tapio_abi.h` (the
//! record header, flags, counters, the config carrier), and the safe record
//! reader. Each observer's own record struct is mirrored in its module
//! (`observer/<name>.rs`).
//!
//! The C header is the single source of truth. Each struct is `#[repr(C)]`
//! with the same fields, and `const` assertions pin every size and offset
//! to the numbers the header asserts with `_Static_assert`. Tests check
//! the mirrors against the skeleton types libbpf-cargo generates from the
//! compiled objects' BTF.

use std::mem::size_of;

pub const ABI_VERSION: u32 = 3;
pub const COMM_LEN: usize = 16;
pub const FILENAME_LEN: usize = 128;
/// `TAPIO_MAX_IGNORED_EXIT_CODES` (the limit lives in `tapio_wire::limits`).
pub use tapio_wire::limits::MAX_IGNORED_EXIT_CODES;

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
    pub const CONNECT_ERROR_TAKEN: u32 = 12;
    pub const CONNECT_ERROR_UNCLASSIFIED: u32 = 13;
    pub const CONFIG_SKIPPED: u32 = 14;
    pub const OOM_VICTIM_EXITING: u32 = 15;
    pub const MAX: u32 = 16;
}

/// `TAPIO_CONSUMER_IDLE`: the value of the `tapio_consumer` flag.
pub const CONSUMER_IDLE: u32 = 1;

/// `TAPIO_TEST_*` (tapio_config.test_flags)
pub const TEST_DOUBLE_ISSUE: u8 = 1 << 0;
pub const TEST_SLOT_COLLIDE: u8 = 1 << 1;
pub const TEST_RESET_UNSEEN: u8 = 1 << 2;

/// `TAPIO_F_*`
pub const F_OWNER_KNOWN: u8 = 1 << 0;
pub const F_CGROUP_KNOWN: u8 = 1 << 1;
pub const F_CRITICAL: u8 = 1 << 2;
pub const F_MM_KNOWN: u8 = 1 << 3;
pub const F_ERRNO: u8 = 1 << 4;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub size: u16,
    pub config_generation: u32,
    pub timestamp_ns: u64,
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
    /// Odd while the agent rewrites the slot (`TAPIO_CONFIG_SLOTS`); the
    /// writer owns it (`crate::loader::ConfigSlots`), `to_kernel` leaves 0.
    pub seq: u32,
    pub _pad1: u32,
}

/// `TAPIO_CONFIG_SLOTS`
pub const CONFIG_SLOTS: usize = 2;

impl KernelConfig {
    /// The little-endian/native bytes the BPF map holds.
    pub fn to_bytes(self) -> [u8; size_of::<KernelConfig>()] {
        // SAFETY: repr(C), integers and integer arrays only, and no
        // implicit padding (`_pad0` is explicit; the fields fill the
        // struct, asserted below), so every byte is initialized.
        unsafe { std::mem::transmute::<KernelConfig, [u8; size_of::<KernelConfig>()]>(self) }
    }
}

// ---- layout: the sizes at compile time; every field's offset is held to
// the C struct's (asserted in tapio_abi.h) by the skeleton test below.
const _: () = {
    assert!(size_of::<EventHeader>() == 16);
    assert!(size_of::<KernelConfig>() == 120);
    // No implicit padding in the carrier: its fields' sizes (five bytes of
    // flags, then `_pad0`; `seq` and `_pad1` at the end) add up to it.
    assert!(
        4 + 4 + 5 + 3 + 8 + 8 + 4 + 4 + 4 * MAX_IGNORED_EXIT_CODES + 8 + 4 + 4
            == size_of::<KernelConfig>()
    );
};

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
pub unsafe trait Pod: Copy {}
unsafe impl Pod for EventHeader {}

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

/// Declares `$t` a ring-buffer record: its size, checked at compile time
/// (every field's offset is held to the C struct's, whose offsets
/// tapio_abi.h asserts, by the observer's skeleton test), and `Pod`.
/// `$t` must be `#[repr(C)]` with integer and integer-array fields only.
macro_rules! record {
    ($t:ty, $size:expr) => {
        const _: () = assert!(std::mem::size_of::<$t>() == $size);
        // SAFETY: repr(C), integers and integer arrays only (the macro's
        // contract, and the skeleton test compares every field).
        unsafe impl $crate::abi::Pod for $t {}
    };
}
pub(crate) use record;

/// One ring-buffer record of an observer whose record struct is `T` and
/// whose record types are `types`: the header must state the record's
/// exact length and one of those types. Never panics, never reads past
/// `bytes`; the field checks are the observer's.
pub fn read_record<T: Pod>(bytes: &[u8], types: &[u16]) -> Result<T, ParseError> {
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
    if !types.contains(&hdr.kind) {
        return Err(ParseError::UnknownType(hdr.kind));
    }
    read_exact(bytes)
}

/// Test: a hand-written mirror has the size and the field offsets of the
/// type libbpf-cargo generated from the compiled object's BTF (which came
/// from tapio_abi.h).
#[cfg(test)]
macro_rules! assert_same_layout {
    ($skel:ty, $mirror:ty, $($f:ident),+) => {{
        assert_eq!(
            std::mem::size_of::<$skel>(),
            std::mem::size_of::<$mirror>(),
            "size of {}",
            stringify!($mirror)
        );
        $(
            assert_eq!(
                std::mem::offset_of!($skel, $f),
                std::mem::offset_of!($mirror, $f),
                "{}.{}",
                stringify!($mirror),
                stringify!($f)
            );
        )+
    }};
}
#[cfg(test)]
pub(crate) use assert_same_layout;

/// The header of a `T` record of type `kind`, for tests.
#[cfg(test)]
impl EventHeader {
    pub fn for_record<T>(kind: u16, config_generation: u32, timestamp_ns: u64) -> EventHeader {
        EventHeader {
            kind,
            size: size_of::<T>() as u16,
            config_generation,
            timestamp_ns,
        }
    }
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
    String::from_utf8_lossy(c_bytes(bytes))
}

/// The bytes of a fixed-size C string up to its NUL (all of them without
/// one).
pub fn c_bytes(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    &bytes[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(C)]
    struct Rec {
        hdr: EventHeader,
        x: u64,
    }
    unsafe impl Pod for Rec {}

    fn rec(kind: u16) -> Vec<u8> {
        record_bytes(&Rec {
            hdr: EventHeader {
                kind,
                size: 24,
                config_generation: 3,
                timestamp_ns: 42,
            },
            x: 7,
        })
    }

    #[test]
    fn reads_a_valid_record_of_its_types() {
        let r: Rec = read_record(&rec(2), &[1, 2]).unwrap();
        assert_eq!((r.hdr.config_generation, r.x), (3, 7));
    }

    #[test]
    fn rejects_short_oversized_unknown_and_mismatched() {
        let b = rec(1);
        let read = |b: &[u8]| read_record::<Rec>(b, &[1]);
        assert_eq!(read(&b[..10]), Err(ParseError::Short { len: 10 }));
        assert_eq!(read(&[]), Err(ParseError::Short { len: 0 }));
        // the header claims the short length: the struct is too short
        let mut short = b[..20].to_vec();
        short[2..4].copy_from_slice(&20u16.to_ne_bytes());
        assert_eq!(read(&short), Err(ParseError::Short { len: 20 }));
        let mut long = b.clone();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(
            read(&long),
            Err(ParseError::SizeMismatch {
                declared: 24,
                len: 32
            })
        );
        long[2..4].copy_from_slice(&32u16.to_ne_bytes());
        assert_eq!(
            read(&long),
            Err(ParseError::Oversized {
                len: 32,
                expected: 24
            })
        );
        // a type of another observer's ring, or of none
        assert_eq!(read(&rec(2)), Err(ParseError::UnknownType(2)));
    }

    #[test]
    fn shared_mirrors_match_the_skeleton_types() {
        use tapio_bpf::network::types as skel;
        // `type` in C is `kind` here (a Rust keyword): it is the first field.
        assert_same_layout!(
            skel::tapio_event_header,
            EventHeader,
            size,
            config_generation,
            timestamp_ns
        );
        assert_eq!(std::mem::offset_of!(EventHeader, kind), 0);
        assert_same_layout!(
            skel::tapio_config,
            KernelConfig,
            abi_version,
            generation,
            network_enabled,
            storage_enabled,
            process_enabled,
            exec_enabled,
            test_flags,
            retransmit_window_ns,
            slow_io_threshold_ns,
            ringbuf_wakeup_bytes,
            ignore_exit_count,
            ignore_exit_codes,
            slow_io_critical_ns,
            seq
        );
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
        assert_eq!(&b[0..4], &3u32.to_ne_bytes(), "TAPIO_ABI_VERSION 3");
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
