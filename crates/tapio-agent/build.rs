//! Links the agent with packed relative relocations (DT_RELR, glibc 2.36+,
//! binutils 2.38+): a position-independent binary carries one 24-byte
//! relocation per pointer in its data otherwise, 35 KB of the agent's 1.0 MB
//! budget; packed, they take 0.5 KB (docs/architecture.md, "Decisions").

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
