//! Compiles every `bpf/*.bpf.c` into a libbpf-rs skeleton in `OUT_DIR`.
//!
//! The C programs include `include/tapio_abi.h` (the kernel/user ABI) and
//! `include/tapio_kernel.h` (the CO-RE declarations of the kernel types they
//! read). Every source found is built: a new observer's object needs no
//! edit here. `skeletons.rs` (which `bpf/lib.rs` includes) declares one
//! module per object, named after it, and its bytes in `objects`.

fn main() {
    #[cfg(target_os = "linux")]
    linux::build();
}

#[cfg(target_os = "linux")]
#[path = "build/strip.rs"]
mod strip;

#[cfg(target_os = "linux")]
mod linux {
    use super::strip;
    use libbpf_cargo::SkeletonBuilder;
    use std::env;
    use std::fmt::Write as _;
    use std::path::PathBuf;

    /// Drops the `LBB<n>_<m>` symbols clang's BPF backend leaves in the
    /// symbol table: branch targets, which no relocation and no loader
    /// uses (230 symbols, 7.6 KB over the three objects). llvm-strip
    /// (Debian's `llvm`, installed by `make setup`) renumbers the
    /// relocations' symbol indices. Without it the labels stay, with a
    /// warning; the size budget then shows the difference.
    pub fn strip_branch_labels(obj: &std::path::Path) {
        let status = std::process::Command::new("llvm-strip")
            .args(["--wildcard", "--strip-symbol=LBB*"])
            .arg(obj)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("llvm-strip {}: {s}", obj.display()),
            Err(e) => println!(
                "cargo:warning=llvm-strip not run ({e}): the BPF objects keep their branch labels"
            ),
        }
    }

    /// The object names: every `bpf/<name>.bpf.c`, sorted.
    fn sources(bpf: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(bpf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", bpf.display()))
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".bpf.c"))
                    .map(String::from)
            })
            .collect();
        names.sort();
        names
    }

    pub fn build() {
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
        let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
        let include = root.join("include");
        let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
            Ok("x86_64") => "x86",
            Ok("aarch64") => "arm64",
            Ok(other) => panic!("unsupported target arch for the BPF programs: {other}"),
            Err(_) => "x86",
        };
        println!("cargo:rerun-if-changed=bpf");
        let names = sources(&root.join("bpf"));
        let mut modules = String::new();
        let mut objects = String::from("/// The compiled BPF object files.\npub mod objects {\n");
        for name in &names {
            let _ = writeln!(
                modules,
                "pub mod {name} {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{name}.skel.rs\"));\n}}"
            );
            let _ = writeln!(
                objects,
                "    pub const {}: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{name}.bpf.o\"));",
                name.to_uppercase()
            );
        }
        objects.push_str("    /// An object's bytes by its name.\n    pub fn by_name(name: &str) -> Option<&'static [u8]> {\n        match name {\n");
        for name in &names {
            let _ = writeln!(
                objects,
                "            {name:?} => Some({}),",
                name.to_uppercase()
            );
        }
        objects.push_str("            _ => None,\n        }\n    }\n}\n");
        std::fs::write(out.join("skeletons.rs"), modules + &objects)
            .unwrap_or_else(|e| panic!("writing skeletons.rs: {e}"));
        for name in &names {
            let src = root.join("bpf").join(format!("{name}.bpf.c"));
            let skel = out.join(format!("{name}.skel.rs"));
            let obj = out.join(format!("{name}.bpf.o"));
            let mut args = vec![
                format!("-I{}", include.display()),
                format!("-D__TARGET_ARCH_{arch}"),
                "-Wall".to_string(),
                "-Werror".to_string(),
            ];
            // The programs' test hooks exist only with the `test-hooks`
            // feature (tapio-agent's, as for its crate::fault), which only
            // the builds the tests drive turn on.
            if env::var_os("CARGO_FEATURE_TEST_HOOKS").is_some() {
                args.push("-DTAPIO_TEST_HOOKS".to_string());
            }
            let mut builder = SkeletonBuilder::new();
            builder.source(&src).obj(&obj).clang_args(args);
            builder
                .build()
                .unwrap_or_else(|e| panic!("building bpf/{name}.bpf.c: {e:#}"));
            // Before the skeleton is generated: it embeds the object's bytes.
            if env::var_os("TAPIO_BPF_KEEP_LINE_INFO").is_none() {
                strip::strip(&obj).unwrap_or_else(|e| panic!("stripping {}: {e}", obj.display()));
                strip_branch_labels(&obj);
            }
            builder
                .generate(&skel)
                .unwrap_or_else(|e| panic!("generating the skeleton of {name}: {e:#}"));
            println!("cargo:rerun-if-changed={}", src.display());
        }
        println!("cargo:rerun-if-env-changed=TAPIO_BPF_KEEP_LINE_INFO");
        println!("cargo:rerun-if-changed=build/strip.rs");
        println!("cargo:rerun-if-changed=bpf/common.bpf.h");
        println!("cargo:rerun-if-changed=include/tapio_abi.h");
        println!("cargo:rerun-if-changed=include/tapio_kernel.h");
    }
}
