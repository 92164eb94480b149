//! `tapio tail`: follow events as the agent writes them, across hour
//! rollover, late files and the fallback directory.

use argh::FromArgs;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tapio_common::store;

/// Follow new events as they are written (Ctrl-C stops).
#[derive(FromArgs)]
#[argh(subcommand, name = "tail")]
pub struct TailArgs {
    /// the agent's data directory (default /var/lib/tapio)
    #[argh(option)]
    pub data_dir: Option<PathBuf>,
    /// the agent's fallback directory, followed too (repeatable)
    #[argh(option)]
    pub fallback_dir: Vec<PathBuf>,
    /// print JSON lines instead of one-line summaries
    #[argh(switch)]
    pub json: bool,
    /// also print the last N events already stored (default 0)
    #[argh(option, default = "0")]
    pub lines: usize,
    /// poll interval in milliseconds (default 250)
    #[argh(option, default = "250")]
    pub poll_ms: u64,
    /// stop after this many seconds (default: run until interrupted)
    #[argh(option)]
    pub for_secs: Option<u64>,
}

/// Per-file read position and an incomplete trailing line.
#[derive(Default)]
struct Cursor {
    offset: u64,
    partial: Vec<u8>,
}

fn print(out: &mut dyn Write, line: &[u8], json: bool) -> Result<(), crate::Failure> {
    let text = if json {
        format!("{}\n", String::from_utf8_lossy(line))
    } else {
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(e) => {
                super::clean(&format!(
                    "{}  {}  {}  {}",
                    e["timestamp"].as_str().unwrap_or(""),
                    super::short_type(e["type"].as_str().unwrap_or("")),
                    e["severity"].as_str().unwrap_or(""),
                    super::describe(&e)
                )) + "\n"
            }
            Err(_) => {
                eprintln!("tapio: skipped a corrupt line");
                return Ok(());
            }
        }
    };
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(crate::write_failed)
}

pub fn run(a: &TailArgs, out: &mut dyn Write) -> Result<(), crate::Failure> {
    let dirs = crate::store_dirs(&a.data_dir, &a.fallback_dir);
    if let Err(e) = std::fs::read_dir(&dirs[0]) {
        return Err(crate::Failure::Runtime(format!(
            "cannot read the data directory {}: {e}",
            dirs[0].display()
        )));
    }
    if a.lines > 0 {
        let (events, _) = super::load(&dirs, (None, None))?;
        for e in events.iter().skip(events.len().saturating_sub(a.lines)) {
            print(out, e.to_string().as_bytes(), a.json)?;
        }
    }
    // Start at the end of everything already there.
    let mut cursors: HashMap<PathBuf, Cursor> = HashMap::new();
    for d in &dirs {
        for f in store::list(d).unwrap_or_default() {
            cursors.insert(
                f.path,
                Cursor {
                    offset: f.bytes,
                    partial: Vec::new(),
                },
            );
        }
    }
    let deadline = a.for_secs.map(|s| Instant::now() + Duration::from_secs(s));
    let mut buf = Vec::new();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
        for d in &dirs {
            for f in store::list(d).unwrap_or_default() {
                let c = cursors.entry(f.path.clone()).or_default();
                if f.bytes < c.offset {
                    // Truncated or replaced: start over.
                    *c = Cursor::default();
                }
                if f.bytes == c.offset {
                    continue;
                }
                let Ok(mut file) = std::fs::File::open(&f.path) else {
                    continue;
                };
                if file.seek(SeekFrom::Start(c.offset)).is_err() {
                    continue;
                }
                buf.clear();
                // At most 16 MiB per file and poll: bounded memory.
                let n = file.take(16 << 20).read_to_end(&mut buf).unwrap_or(0);
                c.offset += n as u64;
                c.partial.extend_from_slice(&buf[..n]);
                while let Some(i) = c.partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = c.partial.drain(..=i).collect();
                    if line.len() > 1 {
                        print(out, &line[..line.len() - 1], a.json)?;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(a.poll_ms.clamp(10, 10_000)));
    }
}
