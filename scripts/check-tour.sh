#!/usr/bin/env bash
# Runs the README's "A short tour" exactly as written, against the cluster scripts/up.sh starts,
# with a fake HOME whose ~/.shoal/tls holds another cluster's admin bundle (what used to make the
# tour's first command fail). Needs .shoal-local/ to be free. Afterwards it stops the cluster and
# deletes .shoal-local/, the tour's containers and the fake HOME, pass or fail.
# It starts a cluster with agents (about 100 s); scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [[ -e .shoal-local ]]; then
    echo "check-tour: .shoal-local/ exists (a local cluster?); run scripts/down.sh --purge first" >&2
    exit 1
fi

# cargo and rustup find themselves through HOME, which the tour replaces.
export CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
fake_home=$(mktemp -d)
work=$(mktemp -d)
foreign_pid=
cleanup() {
    status=$?
    [[ -n $foreign_pid ]] && kill -9 "$foreign_pid" 2>/dev/null
    HOME=$fake_home bash scripts/down.sh --purge >/dev/null 2>&1 || true
    rm -rf "$fake_home" "$work"
    if [[ $status == 0 ]]; then echo "check-tour: the tour ran as written"; else echo "check-tour: FAILED" >&2; fi
}
trap cleanup EXIT

cargo build --workspace --bins --locked

echo "==> another cluster's admin bundle in the fake ~/.shoal/tls"
HOME=$fake_home "$root/target/debug/shoal-manager" --data-dir "$work/foreign" --listen-addr 127.0.0.1:0 \
    >"$work/foreign.log" 2>&1 &
foreign_pid=$!
for _ in $(seq 1 100); do
    [[ -f $fake_home/.shoal/tls/key.pem ]] && break
    sleep 0.1
done
[[ -f $fake_home/.shoal/tls/key.pem ]] || { cat "$work/foreign.log" >&2; exit 1; }
kill -9 "$foreign_pid"
foreign_pid=
foreign_ca=$(cat "$fake_home/.shoal/tls/ca.pem")

echo "==> scripts/up.sh"
HOME=$fake_home bash scripts/up.sh

# The tour's code block, line by line, each echoed before it runs; the first failure stops it.
# `shoal events` runs until Ctrl-C: it gets a few seconds, then SIGINT, as a reader would.
awk '/^## A short tour/ { tour = 1 } tour && /^```sh/ { code = 1; next } code && /^```/ { exit } code' README.md \
    >"$work/tour.txt"
[[ -s $work/tour.txt ]] || { echo "check-tour: no tour found in README.md" >&2; exit 1; }
{
    echo 'set -euo pipefail'
    while IFS= read -r line; do
        [[ -z ${line// /} || $line == \#* ]] && continue
        printf 'echo %q\n' "+ $line"
        if [[ $line == "shoal events"* ]]; then
            printf 'timeout -s INT 5 %s || [[ $? == 124 ]]\n' "${line%%#*}"
        else
            printf '%s\n' "$line"
        fi
    done <"$work/tour.txt"
} >"$work/tour.sh"

echo "==> the tour"
HOME=$fake_home bash "$work/tour.sh"

# The other cluster's bundle is still there, untouched.
[[ $(cat "$fake_home/.shoal/tls/ca.pem") == "$foreign_ca" ]] || {
    echo "check-tour: ~/.shoal/tls was changed" >&2
    exit 1
}
