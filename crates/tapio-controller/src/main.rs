//! tapio-controller: one per cluster. This release ships the profile
//! commands (`compile`, `check`); the tapio-wire/v1 server (`serve`) is
//! tracked in the controller issue.

mod profile_store;

use argh::FromArgs;
use std::path::PathBuf;

/// Tapio controller.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Compile(CompileArgs),
    Check(CheckArgs),
}

/// Validate an Evidence Profile and print its CompiledConfig JSON (for a
/// standalone agent's --config).
#[derive(FromArgs)]
#[argh(subcommand, name = "compile")]
struct CompileArgs {
    /// the Evidence Profile YAML file
    #[argh(positional)]
    file: PathBuf,
}

/// Validate an Evidence Profile: exit 0 when valid, 1 when not.
#[derive(FromArgs)]
#[argh(subcommand, name = "check")]
struct CheckArgs {
    /// the Evidence Profile YAML file
    #[argh(positional)]
    file: PathBuf,
}

fn main() {
    let args: Args = argh::from_env();
    let code = match args.command {
        Command::Compile(a) => match profile_store::load(&a.file) {
            Ok(cfg) => match serde_json::to_string_pretty(&cfg) {
                Ok(s) => {
                    println!("{s}");
                    0
                }
                Err(e) => {
                    eprintln!("tapio-controller: {e}");
                    1
                }
            },
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
        Command::Check(a) => match profile_store::load(&a.file) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({})",
                    a.file.display(),
                    profile_store::config_hash(&cfg)
                );
                0
            }
            Err(e) => {
                eprintln!("{e}");
                1
            }
        },
    };
    std::process::exit(code);
}
