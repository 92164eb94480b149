//! Facts about the host the agent derives its defaults from.

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty() && s.len() <= 253).then(|| s.to_string())
}

pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "unknown-host".into())
}

pub fn machine_id() -> Option<String> {
    read_trimmed("/etc/machine-id").filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn kernel_release() -> String {
    read_trimmed("/proc/sys/kernel/osrelease").unwrap_or_else(|| "unknown".into())
}

/// A fresh random id for this agent process: 16 hex digits from the
/// kernel's UUID generator.
pub fn new_instance_id() -> String {
    let uuid = read_trimmed("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let hex: String = uuid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(16)
        .collect();
    if hex.len() == 16 {
        return hex;
    }
    // Fallback: time and pid, still unique per start on one host.
    format!(
        "{:08x}{:08x}",
        tapio_common::time::now_unix_ns() as u32,
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_ids_are_fresh() {
        let a = super::new_instance_id();
        let b = super::new_instance_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
