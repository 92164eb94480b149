//! Loading an Evidence Profile file: YAML -> EvidenceProfile ->
//! CompiledConfig, with the file, line:column and field path in every
//! error, and the config hash.

use sha2::{Digest, Sha256};
use std::path::Path;
use tapio_profile::EvidenceProfile;
use tapio_wire::CompiledConfig;

/// Most bytes a profile file may have.
const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

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
    fn hash_is_sha256_of_canonical_bytes() {
        let h = config_hash(&CompiledConfig::standalone_default());
        assert!(tapio_wire::is_config_hash(&h), "{h}");
        assert_eq!(h, config_hash(&CompiledConfig::standalone_default()));
    }
}
