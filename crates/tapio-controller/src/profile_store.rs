//! Loading an Evidence Profile file: YAML -> EvidenceProfile ->
//! CompiledConfig, with the file, line:column and field path in every
//! error, and the config hash.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;
use tapio_profile::EvidenceProfile;
use tapio_wire::{CompiledConfig, ConfigResponse, WIRE_VERSION};

/// Most bytes a profile file may have.
use tapio_wire::limits::MAX_CONFIG_FILE_BYTES as MAX_PROFILE_BYTES;

pub fn load(path: &Path) -> Result<CompiledConfig, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(format!("{shown}: larger than {MAX_PROFILE_BYTES} bytes"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    parse(&text).map_err(|e| format!("{shown}:{e}"))
}

/// Errors read `line:column: path: message` (or `path: message` for
/// validation errors, which have no position).
pub fn parse(text: &str) -> Result<CompiledConfig, String> {
    let doc: EvidenceProfile = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(loc) => format!(
            "{}:{}: {}",
            loc.line(),
            loc.column(),
            strip_location(&e.to_string())
        ),
        None => format!(" {e}"),
    })?;
    tapio_profile::compile(&doc).map_err(|errs| {
        errs.0
            .iter()
            .map(|e| format!(" {e}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// serde_yaml appends " at line L column C"; the position is already in
/// front.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// `sha256:<hex>` over the canonical bytes.
pub fn config_hash(cfg: &CompiledConfig) -> String {
    tapio_wire::config_hash_of(&Sha256::digest(cfg.canonical_bytes()))
}

/// The config being served, with its identity and pre-serialized answer.
#[derive(Debug)]
pub struct Active {
    pub config: CompiledConfig,
    pub version: u32,
    pub hash: String,
    /// `"<hash>"`, compared byte for byte with If-None-Match.
    pub etag: String,
    /// The 200 body of `GET /v1/agents/config`.
    pub response: Vec<u8>,
}

impl Active {
    fn new(config: CompiledConfig, version: u32) -> Active {
        let hash = config_hash(&config);
        let response = serde_json::to_vec(&ConfigResponse {
            wire_version: WIRE_VERSION.into(),
            config_version: version.to_string(),
            config_hash: hash.clone(),
            config: config.clone(),
        })
        .unwrap_or_default();
        Active {
            etag: format!("\"{hash}\""),
            config,
            version,
            hash,
            response,
        }
    }
}

/// The active config and its reloads. Generation starts at 1 and moves only
/// when a reload yields a different config (different hash).
pub struct ConfigStore {
    path: Option<PathBuf>,
    active: RwLock<Arc<Active>>,
    mtime: Mutex<Option<SystemTime>>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    last_error: Mutex<String>,
}

fn mtime_of(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl ConfigStore {
    /// Loads the profile (or `production-default`); an error fails startup.
    pub fn open(path: Option<&Path>) -> Result<ConfigStore, String> {
        let config = match path {
            Some(p) => load(p)?,
            None => tapio_profile::compile_builtin("production-default")
                .ok_or_else(|| "builtin production-default does not compile".to_string())?,
        };
        Ok(ConfigStore {
            path: path.map(Path::to_path_buf),
            mtime: Mutex::new(path.and_then(mtime_of)),
            active: RwLock::new(Arc::new(Active::new(config, 1))),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_error: Mutex::new(String::new()),
        })
    }

    pub fn current(&self) -> Arc<Active> {
        match self.active.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// Re-reads the profile file. A valid file with a new hash becomes the
    /// next generation; an invalid one is logged, counted and recorded for
    /// `/v1/status`, and the old config stays.
    pub fn reload(&self, why: &str) {
        let Some(path) = &self.path else {
            log::info!("{why}: no --profile; serving the builtin production-default");
            return;
        };
        if let Ok(mut m) = self.mtime.lock() {
            *m = mtime_of(path);
        }
        match load(path) {
            Ok(config) => {
                self.reloads_ok.fetch_add(1, Relaxed);
                let cur = self.current();
                if config_hash(&config) == cur.hash {
                    log::info!("{why}: profile unchanged ({})", cur.hash);
                    return;
                }
                let next = Arc::new(Active::new(config, cur.version.wrapping_add(1).max(1)));
                log::info!(
                    "{why}: serving config_version {} {}",
                    next.version,
                    next.hash
                );
                match self.active.write() {
                    Ok(mut g) => *g = next,
                    Err(p) => *p.into_inner() = next,
                }
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Relaxed);
                log::error!(
                    "{why}: rejected, keeping config_version {}: {e}",
                    self.current().version
                );
                if let Ok(mut g) = self.last_error.lock() {
                    *g = e;
                }
            }
        }
    }

    /// Reloads when the file's mtime changed since the last look.
    pub fn poll_file(&self) {
        let Some(path) = &self.path else { return };
        let now = mtime_of(path);
        let changed = self.mtime.lock().map(|m| *m != now).unwrap_or(false);
        if changed {
            self.reload("profile file changed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_reports_line_column_and_path() {
        let e = parse("apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\noverrides:\n  storage:\n    slow_io:\n      warn_ms: 5\n").unwrap_err();
        assert!(
            e.starts_with("7:7: overrides.storage.slow_io: unknown field `warn_ms`"),
            "{e}"
        );
    }

    #[test]
    fn validation_errors_carry_the_path() {
        let e = parse("apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\noverrides:\n  storage:\n    slow_io:\n      warning_ms: 150\n      critical_ms: 100\n").unwrap_err();
        assert_eq!(
            e,
            " overrides.storage.slow_io.critical_ms: must be >= warning_ms (150)"
        );
    }

    #[test]
    fn reload_bumps_only_on_change_and_keeps_old_on_error() {
        let dir = std::env::temp_dir().join(format!("tapio-ps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("p.yaml");
        let head = "apiVersion: tapio.dev/v1\nkind: EvidenceProfile\nbase: production-default\n";
        std::fs::write(&p, head).unwrap();
        let store = ConfigStore::open(Some(&p)).unwrap();
        let first = store.current();
        assert_eq!(first.version, 1);
        store.reload("test");
        assert_eq!(store.current().version, 1, "same content, same generation");
        std::fs::write(
            &p,
            format!("{head}overrides:\n  network:\n    retransmit_window_ms: 2000\n"),
        )
        .unwrap();
        store.reload("test");
        let second = store.current();
        assert_eq!(second.version, 2);
        assert_ne!(second.hash, first.hash);
        std::fs::write(&p, format!("{head}overrides:\n  netwrk: {{}}\n")).unwrap();
        store.reload("test");
        assert_eq!(
            store.current().hash,
            second.hash,
            "bad file keeps the old config"
        );
        assert_eq!(store.reloads_failed.load(Relaxed), 1);
        assert!(
            store.last_error().contains("unknown field `netwrk`"),
            "{}",
            store.last_error()
        );
        let body: serde_json::Value = serde_json::from_slice(&second.response).unwrap();
        assert_eq!(body["config_version"], "2");
        assert_eq!(second.etag, format!("\"{}\"", second.hash));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn hash_is_sha256_of_canonical_bytes() {
        let h = config_hash(&CompiledConfig::standalone_default());
        assert!(tapio_wire::is_config_hash(&h), "{h}");
        assert_eq!(h, config_hash(&CompiledConfig::standalone_default()));
    }
}
