#!/usr/bin/env bash
# Fuzzes every parser for a fixed number of runs, starting from the committed seed corpus
# (fuzz/corpus/<target>/), and fails on any crash, panic, leak, timeout or out-of-memory.
#
# The corpus is copied to a temporary directory first, so the inputs libFuzzer adds while it
# runs never land in the checkout. On a failure that directory is kept and the reproducer's path
# printed; rerun it with `cargo +nightly fuzz run <target> <file>` from the checkout.
#
#   PYRO_FUZZ_RUNS    runs per target, for every target (default: the table in runs_for, sized
#                     so the whole script takes ≤ 8 minutes on 2 cores, builds included)
#   PYRO_FUZZ_JOBS    targets run at once (default: the number of CPUs, at most 2)
#   PYRO_FUZZ_TARGETS space-separated subset of targets (default: all of `cargo fuzz list`)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Runs per target: fixed counts, so CI time stays bounded; the slow targets (regex compilation,
# a Symbolizer or a whole ELF file per input) get fewer.
runs_for() {
    if [ -n "${PYRO_FUZZ_RUNS:-}" ]; then
        echo "$PYRO_FUZZ_RUNS"
        return
    fi
    case $1 in
    relabel) echo 2000 ;; # compiles regexes on every input: ~80 runs/s
    elf_symbols) echo 5000 ;;
    perf_map) echo 3000 ;;
    dwarf) echo 5000 ;;
    docker_targets) echo 10000 ;;
    *) echo 20000 ;;
    esac
}
jobs=${PYRO_FUZZ_JOBS:-$(($(nproc) < 2 ? $(nproc) : 2))}

step() { printf '\n==== fuzz: %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "cargo-fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz --version

targets=${PYRO_FUZZ_TARGETS:-$(cd fuzz && cargo +nightly fuzz list)}

step "build ($(echo $targets | wc -w) targets)"
# 16 codegen units (and fuzz/Cargo.toml's opt-level 1): the dependencies (k8s-openapi, bollard,
# hyper) build faster than with cargo-fuzz's defaults, for somewhat slower runs.
if [ -z "${PYRO_FUZZ_TARGETS:-}" ]; then
    (cd fuzz && cargo +nightly fuzz build --codegen-units 16)
else
    for t in $targets; do (cd fuzz && cargo +nightly fuzz build --codegen-units 16 "$t"); done
fi
bin_dir="$root/fuzz/target/x86_64-unknown-linux-gnu/release"

work=$(mktemp -d /tmp/pyro-fuzz.XXXXXX)
keep=0
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT

# One target: copy its corpus, run it, leave its log and any reproducer under $work.
run_one() {
    local t=$1 dir="$work/$1"
    mkdir -p "$dir/artifacts"
    if [ ! -d "fuzz/corpus/$t" ] || [ -z "$(ls -A "fuzz/corpus/$t")" ]; then
        echo "no seed corpus in fuzz/corpus/$t" >"$dir/log"
        return 1
    fi
    cp -r "fuzz/corpus/$t" "$dir/corpus"
    # -timeout: one input taking 30 s is a hang; -rss_limit_mb: 2 GiB is an allocation blow-up.
    "$bin_dir/$t" "$dir/corpus" -runs="$(runs_for "$t")" -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$dir/artifacts/" -print_final_stats=1 >"$dir/log" 2>&1
}
export -f run_one runs_for
export work bin_dir

step "run: ${PYRO_FUZZ_RUNS:-a fixed number of} runs per target, $jobs at a time"
failed=()
# `xargs -P` runs the targets side by side; each writes only its own directory.
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {} && echo "ok {}" >"$work/{}/status" || echo "failed {}" >"$work/{}/status"'
for t in $targets; do
    status=$(cat "$work/$t/status")
    done_line=$(grep -m1 '^Done [0-9]* runs' "$work/$t/log" || echo "no 'Done' line")
    printf '%-20s %-7s %s\n' "$t" "${status%% *}" "$done_line"
    if [ "${status%% *}" != ok ]; then
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    keep=1
    for t in "${failed[@]}"; do
        step "FAILED: $t"
        tail -n 60 "$work/$t/log"
        for a in "$work/$t"/artifacts/*; do
            [ -e "$a" ] && echo "reproducer: $a ($(stat -c %s "$a") bytes)"
        done
    done
    echo "fuzzing failed for: ${failed[*]} (logs and reproducers kept in $work)" >&2
    exit 1
fi
step "done: no crash in $(echo $targets | wc -w) targets"
