//! Compiles every `bpf/*.bpf.c` into a libbpf-rs skeleton in `OUT_DIR`.
//!
//! The C programs include `include/tapio_abi.h` (the kernel/user ABI) and
//! `include/tapio_kernel.h` (the CO-RE declarations of the kernel types they
//! read). `bpf/lib.rs` pulls the generated skeletons in with `include!`.

fn main() {
    #[cfg(target_os = "linux")]
    linux::build();
}

#[cfg(target_os = "linux")]
mod linux {
    use libbpf_cargo::SkeletonBuilder;
    use std::env;
    use std::path::PathBuf;

    /// The observers, each one BPF object named after it.
    const OBSERVERS: &[&str] = &["network", "storage", "process"];

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
        for name in OBSERVERS {
            let src = root.join("bpf").join(format!("{name}.bpf.c"));
            let skel = out.join(format!("{name}.skel.rs"));
            let obj = out.join(format!("{name}.bpf.o"));
            SkeletonBuilder::new()
                .source(&src)
                .obj(&obj)
                .clang_args([
                    format!("-I{}", include.display()),
                    format!("-D__TARGET_ARCH_{arch}"),
                    "-Wall".to_string(),
                    "-Werror".to_string(),
                ])
                .build_and_generate(&skel)
                .unwrap_or_else(|e| panic!("building bpf/{name}.bpf.c: {e:#}"));
            println!("cargo:rerun-if-changed={}", src.display());
        }
        println!("cargo:rerun-if-changed=bpf/common.bpf.h");
        println!("cargo:rerun-if-changed=include/tapio_abi.h");
        println!("cargo:rerun-if-changed=include/tapio_kernel.h");
    }
}
