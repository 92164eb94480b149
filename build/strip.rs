//! Shrinks a compiled BPF object before its skeleton embeds it, keeping
//! everything a loader uses.
//!
//! - The line information of `.BTF.ext` (instruction -> source line) goes:
//!   libbpf reads it only to annotate verifier logs.
//! - The BTF strings only that information used (the source lines
//!   themselves) go with it: the string table is rebuilt from the strings
//!   the types, the function information and the CO-RE relocations name.
//!
//! Together a third of the objects' bytes. `TAPIO_BPF_KEEP_LINE_INFO=1`
//! (see build.rs) keeps them, for reading a verifier log.
//!
//! Layouts: the ELF64 header and section headers (elf(5)); BTF and
//! `.BTF.ext` as the kernel documents them (Documentation/bpf/btf.rst):
//! `struct btf_header`, `struct btf_type` and the data after each kind,
//! `struct btf_ext_header`, and the info blocks
//! (`rec_size`, then per ELF section `sec_name_off`, `num_info`, records).

use std::path::Path;

fn rd(b: &[u8], o: usize, n: usize) -> Result<u64, String> {
    let s = b
        .get(o..o + n)
        .ok_or_else(|| format!("read past the end at {o}"))?;
    Ok(s.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
}

fn r32(b: &[u8], o: usize) -> Result<usize, String> {
    rd(b, o, 4).map(|v| v as usize)
}

fn w32(b: &mut [u8], o: usize, v: usize) {
    b[o..o + 4].copy_from_slice(&(v as u32).to_le_bytes());
}

fn w64(b: &mut [u8], o: usize, v: usize) {
    b[o..o + 8].copy_from_slice(&(v as u64).to_le_bytes());
}

struct Elf {
    f: Vec<u8>,
}

impl Elf {
    fn shoff(&self) -> Result<usize, String> {
        rd(&self.f, 0x28, 8).map(|v| v as usize)
    }

    fn header(&self, i: usize) -> Result<usize, String> {
        Ok(self.shoff()? + i * rd(&self.f, 0x3a, 2)? as usize)
    }

    fn shnum(&self) -> Result<usize, String> {
        rd(&self.f, 0x3c, 2).map(|v| v as usize)
    }

    /// (file offset, size) of section `i`.
    fn range(&self, i: usize) -> Result<(usize, usize), String> {
        let h = self.header(i)?;
        Ok((
            rd(&self.f, h + 0x18, 8)? as usize,
            rd(&self.f, h + 0x20, 8)? as usize,
        ))
    }

    fn find(&self, name: &[u8]) -> Result<Option<usize>, String> {
        let (strtab, _) = self.range(rd(&self.f, 0x3e, 2)? as usize)?;
        for i in 0..self.shnum()? {
            let at = strtab + r32(&self.f, self.header(i)?)?;
            let n = self.f.get(at..at + name.len() + 1);
            if n.is_some_and(|n| &n[..name.len()] == name && n[name.len()] == 0) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Replaces section `i`'s contents with `new`, no longer than before;
    /// the sections and the header table after it move up. The shrink is
    /// rounded down to a multiple of 8 (the largest alignment here), the
    /// rest padded with `pad` bytes.
    fn replace(&mut self, i: usize, mut new: Vec<u8>, pad: u8) -> Result<(), String> {
        let (off, size) = self.range(i)?;
        if new.len() > size {
            return Err("a rewritten section grew".into());
        }
        let delta = (size - new.len()) / 8 * 8;
        new.resize(size - delta, pad);
        let end = off + size;
        self.f.splice(off..end, new);
        let shoff = self.shoff()?;
        if shoff >= end {
            w64(&mut self.f, 0x28, shoff - delta);
        }
        for j in 0..self.shnum()? {
            let h = self.header(j)?;
            let o = rd(&self.f, h + 0x18, 8)? as usize;
            if o >= end {
                w64(&mut self.f, h + 0x18, o - delta);
            }
        }
        let h = self.header(i)?;
        w64(&mut self.f, h + 0x20, size - delta);
        Ok(())
    }
}

/// `.BTF.ext` header fields (offsets from the end of the header).
struct Ext {
    hdr_len: usize,
    func: (usize, usize),
    line: (usize, usize),
    relo: (usize, usize),
}

fn ext_header(f: &[u8], at: usize) -> Result<Ext, String> {
    let hdr_len = r32(f, at + 4)?;
    if rd(f, at, 2)? != 0xeb9f || hdr_len < 32 {
        return Err("unexpected .BTF.ext header".into());
    }
    let g = |i: usize| r32(f, at + 8 + 4 * i);
    Ok(Ext {
        hdr_len,
        func: (g(0)?, g(1)?),
        line: (g(2)?, g(3)?),
        relo: (g(4)?, g(5)?),
    })
}

fn strip_line_info(elf: &mut Elf, ext_index: usize) -> Result<(), String> {
    let (off, size) = elf.range(ext_index)?;
    let e = ext_header(&elf.f, off)?;
    if e.line.1 == 0 {
        return Ok(());
    }
    let body = off + e.hdr_len;
    let mut new = elf.f[off..body].to_vec();
    let func_end = e.func.0 + e.func.1;
    w32(&mut new, 16, func_end);
    w32(&mut new, 20, 0);
    w32(&mut new, 24, func_end);
    new.extend_from_slice(&elf.f[body + e.func.0..body + func_end]);
    new.extend_from_slice(&elf.f[body + e.relo.0..body + e.relo.0 + e.relo.1]);
    if new.len() > size {
        return Err(".BTF.ext layout not understood".into());
    }
    elf.replace(ext_index, new, 0)
}

/// File offsets of every BTF string offset in the types of `.BTF` at
/// `at`, and of the string table (offset, length).
fn type_string_refs(f: &[u8], at: usize) -> Result<(Vec<usize>, usize, usize), String> {
    if rd(f, at, 2)? != 0xeb9f {
        return Err("unexpected .BTF header".into());
    }
    let hdr_len = r32(f, at + 4)?;
    let (type_off, type_len) = (r32(f, at + 8)?, r32(f, at + 12)?);
    let (str_off, str_len) = (r32(f, at + 16)?, r32(f, at + 20)?);
    let mut refs = Vec::new();
    let mut p = at + hdr_len + type_off;
    let end = p + type_len;
    while p < end {
        refs.push(p);
        let info = r32(f, p + 4)?;
        let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
        p += 12;
        // (bytes per member, whether a member starts with a name_off)
        let (each, named, extra) = match kind {
            1 | 14 | 17 => (0, false, 4),          // INT, VAR, DECL_TAG
            2 | 7..=12 | 16 | 18 => (0, false, 0), // PTR, FWD..FUNC, FLOAT, TYPE_TAG
            3 => (0, false, 12),                   // ARRAY
            4 | 5 => (12, true, 0),                // STRUCT, UNION
            6 | 13 => (8, true, 0),                // ENUM, FUNC_PROTO
            15 => (12, false, 0),                  // DATASEC
            19 => (12, true, 0),                   // ENUM64
            k => return Err(format!("BTF kind {k} not understood")),
        };
        if named {
            refs.extend((0..vlen).map(|m| p + m * each));
        }
        p += vlen * each + extra;
    }
    if p != end {
        return Err("BTF types overran their section".into());
    }
    Ok((refs, at + hdr_len + str_off, str_len))
}

/// File offsets of the BTF string offsets in one `.BTF.ext` info block:
/// each section's name, and `field` of each record when it names one.
fn ext_string_refs(
    f: &[u8],
    start: usize,
    len: usize,
    field: Option<usize>,
) -> Result<Vec<usize>, String> {
    let mut refs = Vec::new();
    if len == 0 {
        return Ok(refs);
    }
    let rec = r32(f, start)?;
    let mut p = start + 4;
    while p < start + len {
        refs.push(p);
        let n = r32(f, p + 4)?;
        p += 8;
        if let Some(o) = field {
            refs.extend((0..n).map(|k| p + k * rec + o));
        }
        p += n * rec;
    }
    Ok(refs)
}

/// Rebuilds the `.BTF` string table from the strings still named.
fn compact_strings(elf: &mut Elf, btf_index: usize, ext_index: usize) -> Result<(), String> {
    let (btf, btf_size) = elf.range(btf_index)?;
    let (ext, _) = elf.range(ext_index)?;
    let e = ext_header(&elf.f, ext)?;
    let body = ext + e.hdr_len;
    if e.line.1 != 0 {
        return Err("line information still present".into());
    }
    let (mut refs, strs, str_len) = type_string_refs(&elf.f, btf)?;
    refs.extend(ext_string_refs(&elf.f, body + e.func.0, e.func.1, None)?);
    // bpf_core_relo: insn_off, type_id, access_str_off, kind
    refs.extend(ext_string_refs(&elf.f, body + e.relo.0, e.relo.1, Some(8))?);
    let mut used: Vec<usize> = refs
        .iter()
        .map(|&r| r32(&elf.f, r))
        .collect::<Result<_, _>>()?;
    used.sort_unstable();
    used.dedup();
    let table = elf.f[strs..strs + str_len].to_vec();
    let mut new_table = vec![0u8];
    let mut moved = std::collections::HashMap::from([(0usize, 0usize)]);
    for &o in &used {
        if o == 0 {
            continue;
        }
        let s = table.get(o..).ok_or("a string offset past the table")?;
        let n = s
            .iter()
            .position(|&c| c == 0)
            .ok_or("unterminated string")?;
        moved.insert(o, new_table.len());
        new_table.extend_from_slice(&s[..=n]);
    }
    for &r in &refs {
        let o = r32(&elf.f, r)?;
        w32(&mut elf.f, r, moved[&o]);
    }
    // The table shrinks by a multiple of 8 (extra NULs are empty strings,
    // which BTF allows): the section's bytes stay exactly header + types +
    // strings, as the kernel requires.
    let shrink = (str_len - new_table.len()) / 8 * 8;
    new_table.resize(str_len - shrink, 0);
    let mut new = elf.f[btf..strs].to_vec();
    w32(&mut new, 20, new_table.len());
    new.extend_from_slice(&new_table);
    new.extend_from_slice(&elf.f[strs + str_len..btf + btf_size]);
    elf.replace(btf_index, new, 0)
}

/// Strips `obj` in place (see the module's documentation).
pub fn strip(obj: &Path) -> Result<(), String> {
    let f = std::fs::read(obj).map_err(|e| e.to_string())?;
    if f.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err("not a little-endian ELF64 object".into());
    }
    let mut elf = Elf { f };
    let (Some(btf), Some(ext)) = (elf.find(b".BTF")?, elf.find(b".BTF.ext")?) else {
        return Ok(());
    };
    strip_line_info(&mut elf, ext)?;
    compact_strings(&mut elf, btf, ext)?;
    std::fs::write(obj, elf.f).map_err(|e| e.to_string())
}

/// The length of the line information in an object's `.BTF.ext` (0 when
/// stripped), for the test that holds the embedded objects to it.
#[allow(dead_code)]
pub fn line_info_len(obj: &[u8]) -> Result<usize, String> {
    let elf = Elf { f: obj.to_vec() };
    let ext = elf.find(b".BTF.ext")?.ok_or("no .BTF.ext")?;
    let (off, _) = elf.range(ext)?;
    Ok(ext_header(&elf.f, off)?.line.1)
}
