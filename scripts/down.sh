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
    # Containers of this cluster's agents (their node ids are in the agents' data dirs).
    for id_file in "$state"/agent-*/agent.json; do
        [[ -e $id_file ]] || continue
        node=$(sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p' "$id_file")
        ids=$(docker ps -aq --filter "label=org.shoal.node.id=$node" 2>/dev/null || true)
        [[ -n $ids ]] && docker rm -f $ids >/dev/null && echo "removed containers of $(basename "$(dirname "$id_file")")"
    done
    # The admin bundle copied to ~/.shoal/tls belongs to this cluster: it goes with it.
    if [[ -f $HOME/.shoal/tls/ca.pem ]] && cmp -s "$HOME/.shoal/tls/ca.pem" "$state/manager-1/admin/ca.pem"; then
        rm -rf "$HOME/.shoal/tls"
        echo "removed ~/.shoal/tls (this cluster's admin bundle)"
    fi
    rm -rf "$state"
    echo "deleted .shoal-local/"
fi
