#!/usr/bin/env bash
# Test clients from PyPI and npm: the official Pyroscope SDKs that push into pyro-receive, and
# py-spy, the reference the Python profiling tests compare against. Versions are pinned.
set -euo pipefail

pip_install() {
    # pyenv's interpreter takes packages as is; Debian's system Python needs the PEP 668 opt-out.
    python3 -m pip install --quiet --disable-pip-version-check "$@" \
        || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
}
pip_install pyroscope-io==1.4.0 py-spy==0.4.3
if command -v pyenv >/dev/null; then
    pyenv rehash
fi
command -v py-spy >/dev/null || { echo "py-spy is not on PATH after pip install" >&2; exit 1; }

npm install --global --silent --no-fund --no-audit @pyroscope/nodejs@0.6.4
