//! Records a skipped kernel test where the lean gate can see it
//! ($TAPIO_SKIP_LOG), and says so loudly on stderr.

/// The SKIPPED line is written to the process's stderr directly, not
/// through `eprintln!`, which the test harness captures and hides for a
/// test that passes: a plain `cargo test` shows every skip.
pub fn record(name: &str) {
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "\n*** SKIPPED: {name} ***");
    }
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
