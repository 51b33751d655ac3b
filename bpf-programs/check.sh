#!/usr/bin/env bash
# Rebuilds the eBPF object into a temporary file and fails if it differs from the committed
# pyro-ebpf/bpf/pyro.bpf.o (CI runs this). Needs what build.sh needs.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
committed="$here/../pyro-ebpf/bpf/pyro.bpf.o"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$here/build.sh" "$tmp/pyro.bpf.o"
if cmp -s "$tmp/pyro.bpf.o" "$committed"; then
    echo "check.sh: committed eBPF object is up to date"
else
    echo "check.sh: pyro-ebpf/bpf/pyro.bpf.o differs from a rebuild of bpf-programs/:" >&2
    sha256sum "$committed" "$tmp/pyro.bpf.o" >&2
    echo "run bpf-programs/build.sh and commit the result" >&2
    exit 1
fi
