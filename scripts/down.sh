#!/usr/bin/env bash
# Stops the local cluster started by scripts/up.sh. --purge also deletes its data and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
state=$PWD/.shoal-local
for pidfile in "$state"/*.pid; do
    [[ -e $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
    fi
    rm -f "$pidfile"
done
if [[ ${1:-} == --purge ]]; then
    rm -rf "$state"
    echo "deleted .shoal-local/"
fi
