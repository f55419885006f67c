#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io if there is none and starts
# dockerd if it is not running. Used by scripts/test.sh and scripts/up.sh.
set -euo pipefail
if docker info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    if [[ $(id -u) != 0 ]]; then
        echo "no Docker engine and not root: install docker.io (Debian) or start Docker, then retry" >&2
        exit 1
    fi
    echo "installing docker.io" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd (log: /tmp/shoal-dockerd.log)" >&2
    nohup dockerd >/tmp/shoal-dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && exit 0
        sleep 0.5
    done
    echo "dockerd did not start; see /tmp/shoal-dockerd.log" >&2
    exit 1
fi
