//! `tapio`: reads the agent's local file store. The subcommands are tracked
//! in the operations issue; this build only reports its version.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("--version") | Some("version") => println!("tapio {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "tapio {}: the store reader commands are not in this build yet",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
