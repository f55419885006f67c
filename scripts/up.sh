#!/usr/bin/env bash
# Builds shoal and starts a local three-manager cluster on 127.0.0.1:4242-4244, with its data and
# logs in .shoal-local/. Safe to run again: managers already running are left alone, stopped ones
# resume from their data. Stop it with scripts/down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
state=$root/.shoal-local
bin=$root/target/debug

echo "==> Docker engine and the local test images (nothing is pulled)"
bash scripts/ensure-docker.sh
bash deploy/images/build.sh

echo "==> building shoal (the first build takes a few minutes)"
cargo build --workspace --bins --locked

mkdir -p "$state"
# The CLI authenticates with the admin bundle manager-1 writes when it initialises the cluster.
export SHOAL_TLS_DIR=$state/manager-1/admin
# A process that runs: `kill -0` alone also succeeds for a zombie (a killed manager nobody reaped,
# as under an init that does not reap), which would stop a killed manager from being restarted.
running() { # pid
    kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]
}
start_manager() { # name port [join token]
    local name=$1 port=$2 join=${3:-} token=${4:-}
    local pidfile=$state/$name.pid
    if [[ -f $pidfile ]] && running "$(cat "$pidfile")"; then
        echo "    $name already running (pid $(cat "$pidfile"))"
        return
    fi
    local args=(--data-dir "$state/$name" --listen-addr "127.0.0.1:$port" --hostname "$name")
    if [[ -n $join && ! -f $state/$name/manager.json ]]; then
        args+=(--join "$join" --token "$token")
    fi
    nohup "$bin/shoal-manager" "${args[@]}" >>"$state/$name.log" 2>&1 &
    echo $! >"$pidfile"
    echo "    $name on 127.0.0.1:$port (pid $!, log .shoal-local/$name.log)"
}

wait_ready() { # port
    for _ in $(seq 1 100); do
        if "$bin/shoal" --host "127.0.0.1:$1" cluster info >/dev/null 2>&1; then return 0; fi
        sleep 0.2
    done
    echo "manager on port $1 did not become ready; see .shoal-local/*.log" >&2
    exit 1
}

echo "==> starting managers"
start_manager manager-1 4242
wait_ready 4242
manager_token=$("$bin/shoal" --host 127.0.0.1:4242 cluster join-token -q manager)
worker_token=$("$bin/shoal" --host 127.0.0.1:4242 cluster join-token -q worker)
start_manager manager-2 4243 127.0.0.1:4242 "$manager_token"
wait_ready 4243
start_manager manager-3 4244 127.0.0.1:4242 "$manager_token"
wait_ready 4244

start_agent() { # name, ingress address
    local name=$1 ingress=$2
    local pidfile=$state/$name.pid
    if [[ -f $pidfile ]] && running "$(cat "$pidfile")"; then
        echo "    $name already running (pid $(cat "$pidfile"))"
        return
    fi
    nohup "$bin/shoal-agent" --data-dir "$state/$name" --join 127.0.0.1:4242 --token "$worker_token" \
        --hostname "$name" --ingress-addr "$ingress" >>"$state/$name.log" 2>&1 &
    echo $! >"$pidfile"
    echo "    $name (pid $!, log .shoal-local/$name.log), running containers on the local Docker engine; ingress on $ingress"
}
echo "==> starting agents"
# Each agent's ingress proxy listens on its own loopback address (one machine, two nodes).
start_agent agent-1 127.0.0.2
start_agent agent-2 127.0.0.3
sleep 2

# What the CLI needs to talk to this cluster, whatever ~/.shoal/tls holds (another cluster's
# bundle would otherwise be used): the README tour sources it.
cat >"$state/env" <<EOT
# Written by scripts/up.sh: points the shoal CLI at the cluster in .shoal-local/. Use: . .shoal-local/env
export PATH="$bin:\$PATH"
export SHOAL_TLS_DIR="$SHOAL_TLS_DIR"
export SHOAL_HOST=127.0.0.1:4242,127.0.0.1:4243,127.0.0.1:4244
EOT

echo
"$bin/shoal" --host 127.0.0.1:4242 node ls
cat <<EOT

shoal is running: three managers replicate the cluster state with raft; two agents run tasks as
Docker containers on this machine's engine. Every connection is mutual TLS with the cluster's CA.

Next:
  . .shoal-local/env                   # shoal on your PATH, talking to this cluster with its admin bundle
  shoal cluster join-token worker      # how another machine's agent joins
  shoal service create --name web --replicas 4 --update-parallelism 2 shoal/busybox:1
  shoal service ls                     # REPLICAS 4/4 once the containers run
  shoal service ps web
  docker ps --filter label=org.shoal.service.name=web
  shoal service inspect web
  shoal cluster info
  kill -9 \$(cat .shoal-local/manager-1.pid)   # then: shoal --host 127.0.0.1:4243 service ls
  scripts/up.sh                          # restarts stopped managers; they resume from disk
  scripts/down.sh                        # stops the cluster (add --purge to delete its data)
EOT
