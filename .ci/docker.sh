#!/usr/bin/env bash
# A private Docker engine for the tests: `.ci/docker.sh start DIR` runs Debian's dockerd with
# its socket, data, state, pid file and config under DIR (nothing of the host's /var/lib/docker,
# /run/docker.sock or /etc/docker/daemon.json is used), imports a static busybox as the image
# `pyro-busybox:latest` (images cannot be pulled here), and prints the socket for
# PYRO_DOCKER_HOST. `.ci/docker.sh stop DIR` stops it and removes DIR.
set -euo pipefail
cmd=${1:?usage: docker.sh start|stop DIR}
dir=${2:?usage: docker.sh start|stop DIR}
sock="$dir/docker.sock"
docker_cli() { /usr/bin/docker -H "unix://$sock" "$@"; }

case "$cmd" in
start)
    command -v dockerd >/dev/null && [ -x /bin/busybox ] || {
        apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null
    }
    mkdir -p "$dir/data" "$dir/exec"
    echo '{}' >"$dir/daemon.json"
    # No default bridge (docker0), no iptables rules: the tests make their own network, and
    # published ports go through docker-proxy. A private address pool keeps clear of the host's.
    dockerd --config-file "$dir/daemon.json" -H "unix://$sock" \
        --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" \
        --bridge none --iptables=false --ip6tables=false \
        --default-address-pool base=10.213.0.0/16,size=24 \
        >"$dir/dockerd.log" 2>&1 &
    for _ in $(seq 1 100); do
        docker_cli version >/dev/null 2>&1 && break
        sleep 0.2
    done
    docker_cli version >/dev/null || { cat "$dir/dockerd.log" >&2; exit 1; }
    # A one-file image: the static busybox as /bin/busybox, with its applets linked.
    rootfs="$dir/rootfs"
    mkdir -p "$rootfs/bin"
    cp /bin/busybox "$rootfs/bin/busybox"
    for a in sh sleep yes cat true nc httpd; do ln -sf busybox "$rootfs/bin/$a"; done
    tar -C "$rootfs" -c . | docker_cli import - pyro-busybox:latest >/dev/null
    echo "unix://$sock"
    ;;
stop)
    if [ -S "$sock" ]; then
        docker_cli ps -aq | xargs -r /usr/bin/docker -H "unix://$sock" rm -f >/dev/null || true
        docker_cli network prune -f >/dev/null || true
    fi
    if [ -f "$dir/docker.pid" ]; then
        pid=$(cat "$dir/docker.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    fi
    # dockerd leaves its netns bind mount (exec/netns/default) and may leave overlay mounts:
    # unmount whatever is still mounted under DIR, deepest first, then remove it.
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir" 2>/dev/null || true
    ;;
*)
    echo "usage: docker.sh start|stop DIR" >&2
    exit 2
    ;;
esac
