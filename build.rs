//! Link settings of the component (wasm32 only).

/// The component's initial linear memory: its data and 1 MiB stack (about 1.4 MiB), plus heap
/// room in which wasi-libc's allocator starts, so that a typical request never grows the memory
/// (a growth is an `mprotect` in the host's pool slot and another when the slot is reset).
const INITIAL_MEMORY_BYTES: u64 = 4 << 20;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=--initial-memory={INITIAL_MEMORY_BYTES}");
    }
}
