//! Records a skipped kernel test where the lean gate can see it
//! ($TAPIO_SKIP_LOG), besides the loud SKIPPED line on stderr.

pub fn record(name: &str) {
    if let Some(path) = std::env::var_os("TAPIO_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{name}");
        }
    }
}
