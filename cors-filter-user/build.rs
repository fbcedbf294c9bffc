//! Builds the eBPF program (crate `cors-filter-ebpf`) with nightly for
//! `bpfel-unknown-none` and leaves the object in `OUT_DIR`, where `main.rs`
//! embeds it: a user never handles the object.
//!
//! The nested cargo uses its own target directory (`target/ebpf`) so it
//! neither waits on the lock of the build that runs this script nor
//! rebuilds from scratch for every profile.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_BIN: &str = "cors-filter-ebpf";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    for watched in [
        "cors-filter-ebpf/src",
        "cors-filter-ebpf/Cargo.toml",
        "cors-filter-common/src",
        "cors-filter-common/Cargo.toml",
        "Cargo.lock",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    if let Some(linker) = find_in_path("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }

    let target_dir = workspace.join("target").join("ebpf");
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(workspace)
        .args(["+nightly", "build", "--release", "-Z", "build-std=core"])
        .args(["--package", "cors-filter-ebpf", "--bin", EBPF_BIN])
        .args(["--target", EBPF_TARGET])
        .arg("--target-dir")
        .arg(&target_dir);
    // What the outer (stable, maybe clippy) build put in the environment must
    // not leak into the nested nightly build.
    for key in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        cargo.env_remove(key);
    }
    // BTF in the object (bpf-linker's `--btf`, from the debug info): the
    // verifier needs its function info for the `bpf_loop` callback.
    cargo.env(
        "CARGO_ENCODED_RUSTFLAGS",
        ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
    );
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("cannot run `cargo +nightly` to build the eBPF program: {e}"));
    if !status.success() {
        panic!(
            "building the eBPF program failed ({status}): run `cargo xtask setup` to install \
             the nightly toolchain, rust-src and bpf-linker, or see the errors above"
        );
    }
    let object = target_dir.join(EBPF_TARGET).join("release").join(EBPF_BIN);
    let dest = out_dir.join(EBPF_BIN);
    std::fs::copy(&object, &dest).unwrap_or_else(|e| {
        panic!(
            "cannot copy {} to {}: {e}",
            object.display(),
            dest.display()
        )
    });
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| Path::new(p).is_file())
}
