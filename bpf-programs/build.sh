#!/usr/bin/env bash
# Builds the kernel side of the eBPF profiler and writes the object that `pyro-ebpf` embeds.
#
#   bpf-programs/build.sh [OUTPUT]     (default: pyro-ebpf/bpf/pyro.bpf.o)
#
# Needs the nightly toolchain named in rust-toolchain.toml with rust-src, and bpf-linker 0.10.4:
#   rustup component add rust-src --toolchain nightly
#   cargo +nightly install bpf-linker --version 0.10.4 --locked
# The object is reproducible: paths are remapped, so a rebuild with the same rustc and
# bpf-linker gives the same bytes wherever the repository is checked out (check.sh relies on it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/pyro-ebpf/bpf/pyro.bpf.o}"

# The exact toolchain the committed object was built with; another one gives other bytes.
expected_rustc="rustc 1.97.0-nightly (e50aa6fba 2026-05-19)"
expected_linker="bpf-linker 0.10.4"

cd "$here"
rustc_version="$(rustc -V)"
if [[ "$rustc_version" != "$expected_rustc" ]]; then
    echo "build.sh: expected '$expected_rustc' (nightly), found '$rustc_version'" >&2
    exit 2
fi
if ! linker_version="$(bpf-linker --version 2>/dev/null)"; then
    echo "build.sh: bpf-linker not found; cargo +nightly install bpf-linker --version 0.10.4 --locked" >&2
    exit 2
fi
if [[ "$linker_version" != "$expected_linker" ]]; then
    echo "build.sh: expected '$expected_linker', found '$linker_version'" >&2
    exit 2
fi

sysroot="$(rustc --print sysroot)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
target_dir="${CARGO_TARGET_DIR:-$here/target}/bpf-programs"

RUSTFLAGS="--remap-path-prefix=$here=/pyro/bpf-programs \
--remap-path-prefix=$repo=/pyro \
--remap-path-prefix=$cargo_home=/cargo \
--remap-path-prefix=$sysroot=/rust" \
    cargo build --release --locked --target-dir "$target_dir"

mkdir -p "$(dirname "$out")"
cp "$target_dir/bpfel-unknown-none/release/pyro" "$out"
echo "build.sh: wrote $out ($(wc -c <"$out") bytes, sha256 $(sha256sum "$out" | cut -d' ' -f1))"
