//! The event model and its JSON line.
//!
//! An [`Event`] is small (and allocates only for exec's filename): the agent's poller builds it from a
//! record without allocating, and the sender thread serializes it. The JSON
//! is written by hand (no serde on the hot path); its shape is exactly the
//! wire's `WireEvent`, which a test holds together.

pub use crate::observers::Facts;
use std::net::IpAddr;
use tapio_common::decimal::{digits, div10};
use tapio_common::time::Rfc3339Cache;
pub use tapio_wire::EventKind;
use tapio_wire::Severity;

/// A task name as the kernel stores it: up to 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Comm(pub [u8; 16]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        crate::abi::c_str(&self.0)
    }
}

/// The owner of a fact, where it is known truthfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
}

/// Who a cgroup belongs to, read from its path (no API server): the facts
/// a kubelet-created or systemd-created path names truthfully. Shared
/// (`Arc`) by every event of the same cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    /// The cgroup's path relative to the cgroup v2 mount (`/kubepods.slice/...`).
    pub cgroup_path: Box<str>,
    /// Kubernetes pod UID, with dashes as the API shows it.
    pub pod_uid: Option<Box<str>>,
    /// Container id: 64 lowercase hex digits.
    pub container_id: Option<Box<str>>,
    /// `guaranteed`, `burstable` or `besteffort`.
    pub qos_class: Option<&'static str>,
    /// The systemd service outside Kubernetes (`nginx.service`).
    pub systemd_unit: Option<Box<str>>,
    /// The facts above as JSON members, rendered once by [`Workload::seal`]
    /// instead of escaped again for every event.
    pub members: Box<str>,
}

impl Workload {
    /// Renders [`Workload::members`] from the facts: call it once the facts
    /// are final.
    pub fn seal(mut self) -> Workload {
        let mut out = String::new();
        let mut j = Json {
            out: &mut out,
            first: true,
            ip4: &mut Ip4Cache::default(),
        };
        j.str("cgroup_path", &self.cgroup_path);
        if let Some(v) = &self.pod_uid {
            j.str("pod_uid", v);
        }
        if let Some(v) = &self.container_id {
            j.str("container_id", v);
        }
        if let Some(v) = self.qos_class {
            j.str("qos_class", v);
        }
        if let Some(v) = &self.systemd_unit {
            j.str("systemd_unit", v);
        }
        self.members = out.into();
        self
    }
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Sequence number within the agent instance; with the instance id it
    /// forms the event id.
    pub seq: u64,
    pub kind: EventKind,
    pub severity: Severity,
    /// Wall-clock ns since the epoch, converted from the kernel timestamp.
    pub timestamp_ns: u64,
    pub config_generation: u32,
    pub facts: Facts,
    /// The owner's workload, from its cgroup (network and process events),
    /// when it could be resolved.
    pub workload: Option<std::sync::Arc<Workload>>,
    /// oom_kill on a host whose memory controller is on cgroup v1: the
    /// victim's memory cgroup, resolved in that hierarchy.
    pub memcg: Option<std::sync::Arc<Workload>>,
}

/// Appends `s` to the line being built. Always inlined, with the copy in
/// line: at opt-level "z" `String::push_str` is an out-of-line call, and a
/// line is some thirty pieces (docs/budgets.md, "CPU per event").
#[inline(always)]
fn put(out: &mut String, s: &str) {
    if out.capacity() - out.len() < s.len() {
        grow(out, s.len());
    }
    // SAFETY: the capacity check above leaves room for `s.len()` more
    // bytes, so the copy stays inside the allocation and `set_len` covers
    // only initialised bytes; `s` is UTF-8, so `out` stays UTF-8.
    unsafe {
        let v = out.as_mut_vec();
        let len = v.len();
        copy_bytes(s.as_ptr(), v.as_mut_ptr().add(len), s.len());
        v.set_len(len + s.len());
    }
}

/// Copies `n` bytes from `src` to `dst`. Up to 32 bytes, the length of
/// most of a line's variable pieces (digits, addresses, the comm, the
/// timestamp), as two overlapping loads and stores in line; longer ones
/// with `memcpy`, which for short copies cost a call and a size dispatch
/// each (docs/budgets.md, "CPU per event").
///
/// # Safety
/// `src` is valid for reads and `dst` for writes of `n` bytes, and the two
/// do not overlap.
#[inline(always)]
unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    use std::ptr::{read_unaligned as load, write_unaligned as store};
    // SAFETY: each branch touches only bytes below `n` of both buffers
    // (the two halves overlap when `n` is below twice their width).
    unsafe {
        if n > 32 {
            std::ptr::copy_nonoverlapping(src, dst, n);
        } else if n >= 16 {
            let (a, b) = (
                load(src.cast::<u128>()),
                load(src.add(n - 16).cast::<u128>()),
            );
            store(dst.cast::<u128>(), a);
            store(dst.add(n - 16).cast::<u128>(), b);
        } else if n >= 8 {
            let (a, b) = (load(src.cast::<u64>()), load(src.add(n - 8).cast::<u64>()));
            store(dst.cast::<u64>(), a);
            store(dst.add(n - 8).cast::<u64>(), b);
        } else if n >= 4 {
            let (a, b) = (load(src.cast::<u32>()), load(src.add(n - 4).cast::<u32>()));
            store(dst.cast::<u32>(), a);
            store(dst.add(n - 4).cast::<u32>(), b);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
    }
}

#[cold]
#[inline(never)]
fn grow(out: &mut String, more: usize) {
    out.reserve(more);
}

/// Appends bytes already known to be ASCII, without a UTF-8 check.
///
/// # Safety
/// Every byte of `b` is ASCII (checked in debug builds).
#[inline(always)]
unsafe fn put_ascii(out: &mut String, b: &[u8]) {
    debug_assert!(b.is_ascii());
    // SAFETY: ASCII is UTF-8 (the caller's contract).
    put(out, unsafe { std::str::from_utf8_unchecked(b) });
}

/// Appends `v` in decimal (`tapio_common::decimal`: no division
/// instruction).
#[inline(always)]
fn put_u64(out: &mut String, v: u64) {
    let mut b = [0u8; 20];
    let at = digits(v, &mut b);
    // SAFETY: decimal digits.
    unsafe { put_ascii(out, &b[at..]) };
}

/// Appends the decimal text of an IPv4 octet at `b[n..]`, returning the
/// new end. No division instruction (`tapio_common::decimal`).
#[inline(always)]
fn put_octet(b: &mut [u8; 17], mut n: usize, o: u8) -> usize {
    let mut v = u32::from(o);
    if v >= 100 {
        let h = if v >= 200 { 2 } else { 1 };
        b[n] = b'0' + h as u8;
        n += 1;
        v -= 100 * h;
    }
    let tens = div10(v);
    if o >= 10 {
        b[n] = b'0' + tens as u8;
        n += 1;
    }
    b[n] = b'0' + (v - 10 * tens) as u8;
    n + 1
}

/// A byte a JSON string carries as is, with no escape and no UTF-8 repair:
/// printable ASCII other than `"` and `\`.
#[inline(always)]
fn plain(b: u8) -> bool {
    (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'
}

/// The text of a comm that needs no JSON escape and no UTF-8 repair:
/// printable ASCII without `"` and `\`, up to its NUL. Task names almost
/// always are; the rest takes the lossy, escaping path.
#[inline(always)]
fn plain_comm(c: &Comm) -> Option<&[u8]> {
    let b = crate::abi::c_bytes(&c.0);
    b.iter().all(|&x| plain(x)).then_some(b)
}

/// Writes the members of a JSON object without an allocation per value.
pub struct Json<'a> {
    out: &'a mut String,
    first: bool,
    ip4: &'a mut Ip4Cache,
}

/// The quoted text of recently written IPv4 addresses: a host's own
/// address and its busiest peers recur in most lines, and a hit is a
/// compare and one short copy instead of four octets' digits. Direct
/// mapped, 8 entries; every entry always holds a valid pair (it starts as
/// 0.0.0.0).
#[derive(Debug, Clone)]
pub struct Ip4Cache {
    addr: [u32; 8],
    len: [u8; 8],
    text: [[u8; 17]; 8],
}

impl Default for Ip4Cache {
    fn default() -> Self {
        let mut zero = [0u8; 17];
        zero[..9].copy_from_slice(b"\"0.0.0.0\"");
        Ip4Cache {
            addr: [0; 8],
            len: [9; 8],
            text: [zero; 8],
        }
    }
}

impl Ip4Cache {
    /// The quoted text of `a`, written on a miss.
    #[inline(always)]
    fn text(&mut self, a: std::net::Ipv4Addr) -> &[u8] {
        let v = u32::from(a);
        let i = (v.wrapping_mul(0x9E37_79B9) >> 29) as usize;
        if self.addr[i] != v {
            let b = &mut self.text[i];
            *b = *b"\"000.000.000.000\"";
            let [o0, o1, o2, o3] = a.octets();
            let mut n = put_octet(b, 1, o0);
            b[n] = b'.';
            n = put_octet(b, n + 1, o1);
            b[n] = b'.';
            n = put_octet(b, n + 1, o2);
            b[n] = b'.';
            n = put_octet(b, n + 1, o3);
            b[n] = b'"';
            self.addr[i] = v;
            self.len[i] = n as u8 + 1;
        }
        &self.text[i][..usize::from(self.len[i])]
    }
}

impl<'a> Json<'a> {
    #[inline(always)]
    fn key(&mut self, k: &str) {
        put(self.out, if self.first { "\"" } else { ",\"" });
        self.first = false;
        put(self.out, k);
        put(self.out, "\":");
    }

    pub fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(v, self.out);
    }

    /// A fixed identifier (`ipv4`, an errno's name, a TCP state): text
    /// of the program's own, which needs no escape.
    pub fn word(&mut self, k: &str, v: &'static str) {
        debug_assert!(v.bytes().all(plain));
        self.key(k);
        put(self.out, "\"");
        put(self.out, v);
        put(self.out, "\"");
    }

    /// A task name: as is when it is plain ASCII, else lossily decoded
    /// and escaped.
    pub fn comm(&mut self, k: &str, c: &Comm) {
        match plain_comm(c) {
            Some(b) => {
                self.key(k);
                put(self.out, "\"");
                // SAFETY: `plain_comm` returns printable ASCII only.
                unsafe { put_ascii(self.out, b) };
                put(self.out, "\"");
            }
            None => self.str(k, &c.as_str()),
        }
    }

    /// Members already written as JSON (`"a":1,"b":"c"`), such as a
    /// workload's, rendered once per cgroup ([`Workload::members`]).
    fn members(&mut self, m: &str) {
        if m.is_empty() {
            return;
        }
        if !self.first {
            put(self.out, ",");
        }
        self.first = false;
        put(self.out, m);
    }

    pub fn num<T: Into<u64>>(&mut self, k: &str, v: T) {
        self.key(k);
        put_u64(self.out, v.into());
    }

    /// `k` only when there is a value: an unknown fact is left out, never
    /// written as 0.
    pub fn num_opt<T: Into<u64>>(&mut self, k: &str, v: Option<T>) {
        if let Some(v) = v {
            self.num(k, v);
        }
    }

    /// A signed number, left out when unknown.
    pub fn int_opt<T: Into<i64>>(&mut self, k: &str, v: Option<T>) {
        if let Some(v) = v {
            let v: i64 = v.into();
            self.key(k);
            if v < 0 {
                put(self.out, "-");
            }
            put_u64(self.out, v.unsigned_abs());
        }
    }

    pub fn ip(&mut self, k: &str, v: IpAddr) {
        self.key(k);
        match v {
            // The common case, without core::fmt: four decimal octets.
            IpAddr::V4(a) => {
                let t = self.ip4.text(a);
                // SAFETY: digits, dots and quotes.
                unsafe { put_ascii(self.out, t) };
            }
            IpAddr::V6(a) => {
                use std::fmt::Write;
                put(self.out, "\"");
                let _ = write!(self.out, "{a}");
                put(self.out, "\"");
            }
        }
    }
}

/// A JSON string literal of `s`, escaped. Runs of bytes that need no
/// escape (everything but `"`, `\` and control characters; UTF-8
/// continuation bytes are all >= 0x80) are copied whole.
pub fn escape_into(s: &str, out: &mut String) {
    put(out, "\"");
    let b = s.as_bytes();
    let mut start = 0;
    for (i, &c) in b.iter().enumerate() {
        let esc: &str = match c {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            c if c < 0x20 || c == 0x7f => "",
            _ => continue,
        };
        // `i` is at an ASCII byte, so both slices end on char boundaries.
        put(out, &s[start..i]);
        if esc.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            put(out, "\\u00");
            out.push(char::from(HEX[usize::from(c >> 4)]));
            out.push(char::from(HEX[usize::from(c & 0xf)]));
        } else {
            put(out, esc);
        }
        start = i + 1;
    }
    put(out, &s[start..]);
    put(out, "\"");
}

/// Writes events as JSON lines for one agent instance, keeping what
/// successive lines share: the id's prefix, the text from the type to the
/// timestamp for the last kind and severity, and the timestamp's calendar
/// second. A storm of one kind writes each of them with one copy.
#[derive(Debug, Clone)]
pub struct LineWriter {
    /// `{"id":"<instance>-`
    id_prefix: String,
    /// `","type":"…","observer":"…","severity":"…","timestamp":"` of
    /// `head_of`.
    head: String,
    head_of: Option<(EventKind, Severity)>,
    clock: Rfc3339Cache,
    ip4: Ip4Cache,
}

impl LineWriter {
    pub fn new(instance: &str) -> Self {
        LineWriter {
            id_prefix: format!("{{\"id\":\"{instance}-"),
            head: String::with_capacity(160),
            head_of: None,
            clock: Rfc3339Cache::default(),
            ip4: Ip4Cache::default(),
        }
    }

    /// Appends `ev`'s JSON object (no newline) to `out`.
    pub fn write(&mut self, ev: &Event, out: &mut String) {
        // The id, `<instance>-<seq>`, is unique per agent instance and the
        // same on every resend.
        put(out, &self.id_prefix);
        put_u64(out, ev.seq);
        if self.head_of != Some((ev.kind, ev.severity)) {
            self.head.clear();
            for piece in [
                "\",\"type\":\"",
                ev.kind.type_name(),
                "\",\"observer\":\"",
                ev.kind.observer().as_str(),
                "\",\"severity\":\"",
                ev.severity.as_str(),
                "\",\"timestamp\":\"",
            ] {
                self.head.push_str(piece);
            }
            self.head_of = Some((ev.kind, ev.severity));
        }
        put(out, &self.head);
        // RFC 3339 is ASCII: written straight into the line, no escaping
        // and no allocation.
        put(out, self.clock.format(ev.timestamp_ns));
        put(out, "\",\"config_generation\":");
        put_u64(out, ev.config_generation.into());
        put(out, ",\"facts\":{");
        let mut j = Json {
            out,
            first: true,
            ip4: &mut self.ip4,
        };
        ev.facts.write_json(&mut j);
        if let Some(w) = &ev.workload {
            j.members(&w.members);
        }
        if let Some(m) = &ev.memcg {
            j.str("memcg_path", &m.cgroup_path);
        }
        put(out, "}}");
    }
}

#[cfg(test)]
impl Event {
    /// Appends the event's JSON object (no newline) to `out`; a stream of
    /// events goes through one [`LineWriter`].
    pub fn write_json(&self, instance: &str, out: &mut String) {
        LineWriter::new(instance).write(self, out);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaped_strings_read_back_exactly() {
        // serde_json is the oracle: whatever escape_into writes must parse
        // back to the very string.
        for s in [
            "",
            "plain",
            "cu\"rl\\x",
            "tab\there\nline\r",
            "\u{1}\u{1f}\u{7f}bell",
            "ünïcødé ✓ 𝄞",
            "mixed\u{0}\"ü\\",
        ] {
            let mut out = String::new();
            escape_into(s, &mut out);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
            assert!(!out[1..out.len() - 1].bytes().any(|b| b < 0x20 || b == 0x7f));
        }
    }

    use super::*;
    use crate::observer::network::NetFacts;
    use tapio_wire::WireEvent;

    fn comm(s: &str) -> Comm {
        let mut c = [0u8; 16];
        c[..s.len()].copy_from_slice(s.as_bytes());
        Comm(c)
    }

    fn refused() -> Event {
        Event {
            seq: 7,
            kind: EventKind::ConnectionRefused,
            severity: Severity::Warning,
            timestamp_ns: 1_795_328_784_500_000_000,
            config_generation: 2,
            workload: None,
            memcg: None,
            facts: Facts::Network(NetFacts {
                owner: Some(Owner {
                    pid: 42,
                    comm: comm(
                        "cu\"rl
",
                    ),
                }),
                ..NetFacts::sample()
            }),
        }
    }

    #[test]
    fn json_line_is_exact() {
        let mut s = String::new();
        refused().write_json("abc", &mut s);
        assert_eq!(
            s,
            r#"{"id":"abc-7","type":"kernel.network.connection_refused","observer":"network","severity":"warning","timestamp":"2026-11-22T06:26:24.500000000Z","config_generation":2,"facts":{"family":"ipv4","src_ip":"127.0.0.1","src_port":40000,"dst_ip":"127.0.0.1","dst_port":9,"pid":42,"comm":"cu\"rl\n","cgroup_id":1}}"#
        );
    }

    #[test]
    fn json_decodes_as_a_valid_wire_event() {
        let mut s = String::new();
        refused().write_json("abc", &mut s);
        let w: WireEvent = serde_json::from_str(&s).unwrap();
        assert_eq!(w.id, "abc-7");
        assert_eq!(w.kind, "kernel.network.connection_refused");
        assert_eq!(w.facts["comm"], "cu\"rl\n");
        assert!(tapio_wire::looks_like_rfc3339_utc(&w.timestamp));
        assert_eq!(
            tapio_wire::find_reasoning_key(&serde_json::to_value(&w).unwrap()),
            None
        );
    }

    #[test]
    fn owner_unknown_leaves_the_keys_out() {
        let mut e = refused();
        if let Facts::Network(n) = &mut e.facts {
            n.owner = None;
            n.cgroup_id = None;
        }
        let mut s = String::new();
        e.write_json("x", &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let facts = v["facts"].as_object().unwrap();
        assert!(
            !facts.contains_key("pid")
                && !facts.contains_key("comm")
                && !facts.contains_key("cgroup_id")
        );
    }

    /// One writer over a stream whose kind, severity and second change
    /// writes each line exactly as a fresh writer would: nothing it keeps
    /// from the line before leaks into the next.
    #[test]
    fn a_writer_reused_across_kinds_severities_and_seconds_writes_fresh_lines() {
        let mut w = LineWriter::new("i");
        let mut ts = 1_795_328_784_500_000_000u64;
        for round in 0..3u64 {
            for (n, kind) in EventKind::ALL.into_iter().enumerate() {
                for severity in [Severity::Warning, Severity::Critical, Severity::Warning] {
                    ts += 400_000_000 * (n as u64 % 3);
                    let e = Event {
                        seq: round * 1000 + n as u64,
                        kind,
                        severity,
                        timestamp_ns: ts,
                        facts: Facts::sample(kind.observer()),
                        ..refused()
                    };
                    let (mut reused, mut fresh) = (String::new(), String::new());
                    w.write(&e, &mut reused);
                    e.write_json("i", &mut fresh);
                    assert_eq!(reused, fresh);
                }
            }
        }
    }

    /// Every length from empty to past the in-line copies, appended after
    /// every offset, against `push_str`.
    #[test]
    fn put_copies_every_length_exactly() {
        let text: String = (0..80u8).map(|i| char::from(b'!' + i % 90)).collect();
        for pre in 0..9 {
            for n in 0..=text.len() {
                let mut fast = "x".repeat(pre);
                let mut slow = fast.clone();
                put(&mut fast, &text[..n]);
                slow.push_str(&text[..n]);
                put(&mut fast, "|");
                slow.push('|');
                assert_eq!(fast, slow, "{pre} {n}");
            }
        }
    }

    /// Numbers, signed and unsigned, at their edges, against the standard
    /// library's text.
    #[test]
    fn numbers_are_the_standard_text() {
        for v in [0u64, 9, 10, 65_535, u64::from(u32::MAX) + 1, u64::MAX] {
            let mut s = String::new();
            Json {
                out: &mut s,
                first: true,
                ip4: &mut Ip4Cache::default(),
            }
            .num("n", v);
            assert_eq!(s, format!("\"n\":{v}"));
        }
        for v in [i64::MIN, -32_768, -1, 0, 1, 255, i64::MAX] {
            let mut s = String::new();
            Json {
                out: &mut s,
                first: true,
                ip4: &mut Ip4Cache::default(),
            }
            .int_opt("n", Some(v));
            assert_eq!(s, format!("\"n\":{v}"));
        }
    }

    /// Every octet in every position, against the standard library's
    /// text of the address.
    #[test]
    fn ipv4_text_is_the_standard_text() {
        // One cache for all, as a writer keeps it: misses, hits, entries
        // taken over by another address, and the 0.0.0.0 it starts with.
        let mut cache = Ip4Cache::default();
        for o in 0..=255u8 {
            for a in [
                std::net::Ipv4Addr::new(o, 0, 9, 255),
                std::net::Ipv4Addr::new(1, o, 10, 99),
                std::net::Ipv4Addr::new(100, 200, o, 7),
                std::net::Ipv4Addr::new(250, 19, 101, o),
                std::net::Ipv4Addr::new(0, 0, 0, 0),
                std::net::Ipv4Addr::new(127, 0, 0, 1),
                std::net::Ipv4Addr::new(o, 0, 9, 255),
            ] {
                let mut s = String::new();
                Json {
                    out: &mut s,
                    first: true,
                    ip4: &mut cache,
                }
                .ip("a", a.into());
                assert_eq!(s, format!("\"a\":\"{a}\""));
            }
        }
    }

    /// A comm written by the plain path reads back as the lossy, escaped
    /// path would write it, for plain and awkward names alike.
    #[test]
    fn comm_text_matches_the_escaped_text() {
        let mut full = [b'x'; 16];
        full[15] = b'y';
        for raw in [
            comm("curl"),
            comm(""),
            Comm(full),
            comm("a\"b"),
            comm("back\\slash"),
            comm("tab\there"),
            comm("del\u{7f}"),
            comm("ünï"),
            Comm(*b"bad\xff\xfeutf8\0\0\0\0\0\0\0"),
        ] {
            let (mut fast, mut slow) = (String::new(), String::new());
            Json {
                out: &mut fast,
                first: true,
                ip4: &mut Ip4Cache::default(),
            }
            .comm("comm", &raw);
            Json {
                out: &mut slow,
                first: true,
                ip4: &mut Ip4Cache::default(),
            }
            .str("comm", &raw.as_str());
            assert_eq!(fast, slow, "{raw:?}");
        }
    }

    /// A workload's members, rendered once, are the facts of its path in
    /// the line, and the line stays one JSON object.
    #[test]
    fn workload_members_are_its_facts() {
        let path = "/kubepods.slice/kubepods-burstable.slice/\
            kubepods-burstable-pod1b2c3d4e_0000_4000_8000_00000000000a.slice/\
            cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";
        let mut e = refused();
        e.workload = Some(std::sync::Arc::new(crate::attribution::parse(path)));
        let mut s = String::new();
        e.write_json("i", &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let f = &v["facts"];
        assert_eq!(f["cgroup_path"], path);
        assert_eq!(f["pod_uid"], "1b2c3d4e-0000-4000-8000-00000000000a");
        assert_eq!(
            f["container_id"],
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
        assert_eq!(f["qos_class"], "burstable");
        assert_eq!(f["cgroup_id"], 1);
        assert!(f.get("systemd_unit").is_none());
    }

    #[test]
    fn every_kind_serializes_to_parseable_json() {
        for kind in EventKind::ALL {
            let facts = Facts::sample(kind.observer());
            let e = Event {
                kind,
                facts,
                ..refused()
            };
            let mut s = String::new();
            e.write_json("i", &mut s);
            let w: WireEvent =
                serde_json::from_str(&s).unwrap_or_else(|err| panic!("{kind:?}: {err}: {s}"));
            assert_eq!(w.kind, kind.type_name());
            assert_eq!(w.observer, kind.observer());
            assert_eq!(EventKind::from_type_name(&w.kind), Some(kind));
        }
    }
}
