//! The agent's config: where it comes from (`--config FILE` or the builtin
//! default, here), how it reaches the kernel (`kernel`, `slots`), and the config in
//! force shared between threads, applied one generation at a time
//! (`shared`).

mod kernel;
mod shared;
mod slots;

pub use kernel::to_kernel;
pub use shared::{SharedConfig, apply_generation};
pub use slots::ConfigSlots;

use std::path::Path;
use tapio_wire::CompiledConfig;

use tapio_wire::limits::MAX_CONFIG_FILE_BYTES as MAX_CONFIG_BYTES;

/// Reads and validates a `CompiledConfig` JSON file. Errors are messages
/// for the operator, with the file and the field path.
pub fn load_file(path: &Path) -> Result<CompiledConfig, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        ));
    }
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg: CompiledConfig =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    cfg.validate()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(cfg)
}

pub fn initial(path: Option<&Path>) -> Result<CompiledConfig, String> {
    match path {
        Some(p) => load_file(p),
        None => Ok(CompiledConfig::standalone_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_rejects_with_paths() {
        let dir = std::env::temp_dir().join(format!("tapio-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(
            &good,
            serde_json::to_vec(&CompiledConfig::standalone_default()).unwrap(),
        )
        .unwrap();
        assert_eq!(
            load_file(&good).unwrap(),
            CompiledConfig::standalone_default()
        );
        let bad = dir.join("bad.json");
        let mut c = CompiledConfig::standalone_default();
        c.batching.max_events = 0;
        std::fs::write(&bad, serde_json::to_vec(&c).unwrap()).unwrap();
        let e = load_file(&bad).unwrap_err();
        assert!(e.contains("config.batching.max_events"), "{e}");
        std::fs::write(&bad, b"{").unwrap();
        assert!(load_file(&bad).unwrap_err().contains("bad.json"));
        assert!(load_file(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
