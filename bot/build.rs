//! Compiles the std-only demo app (compose/demo/app/main.rs) into a statically linked
//! binary at `$OUT_DIR/demo-app`; `src/demo.rs` embeds it with `include_bytes!` and
//! ships it in a `FROM scratch` image. It must be static: a scratch image has no libc.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let source = manifest_dir.join("../compose/demo/app/main.rs");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("demo-app");
    // Cargo gives build scripts the compiler it uses; `TARGET` is the target being built.
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("TARGET");

    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");

    let output = Command::new(&rustc)
        .args(["--edition", "2021", "-C", "opt-level=2"])
        .args(["-C", "target-feature=+crt-static", "-C", "strip=symbols"])
        .args(["--crate-name", "slipway_demo_app", "--crate-type", "bin"])
        .args(["--target", &target])
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&rustc).display()));
    if !output.status.success() {
        panic!(
            "failed to compile the demo app ({}) as a static binary for {target}.\n\
             If the linker cannot find -lc (libc.a), install static glibc: on Debian/Ubuntu\n\
             `apt-get install libc6-dev`.\n\
             rustc said:\n{}",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if let Some(interp) = elf_interpreter(&out) {
        panic!("the demo app was linked dynamically (interpreter {interp}); it needs crt-static");
    }
}

/// Returns the PT_INTERP path of a 64-bit little-endian ELF file, i.e. the dynamic
/// loader it needs; `None` for static binaries or anything this does not understand.
fn elf_interpreter(path: &Path) -> Option<String> {
    let elf = fs::read(path).ok()?;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None; // not ELF64 little-endian: nothing to check
    }
    let u16_at = |i: usize| Some(u16::from_le_bytes(elf.get(i..i + 2)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(elf.get(i..i + 8)?.try_into().ok()?));
    let (phoff, phentsize, phnum) = (u64_at(0x20)? as usize, u16_at(0x36)?, u16_at(0x38)?);
    (0..phnum as usize).find_map(|i| {
        let ph = phoff + i * phentsize as usize;
        const PT_INTERP: u32 = 3;
        if u32::from_le_bytes(elf.get(ph..ph + 4)?.try_into().ok()?) != PT_INTERP {
            return None;
        }
        let (off, size) = (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize);
        let name = elf.get(off..off + size)?;
        Some(
            String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_string(),
        )
    })
}
