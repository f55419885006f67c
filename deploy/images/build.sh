#!/usr/bin/env bash
# Builds the small local images shoal's tests and examples use. No registry is involved: every
# image is FROM scratch plus the static busybox from Debian's busybox-static package.
#
#   shoal/busybox:1, :2   run forever (a shell loop), exit 0 at once on SIGTERM; :2 differs from :1
#                         only by a label and /VERSION, for rolling updates
#   shoal/exit0:1         exits 0 after 1s
#   shoal/fail:1          exits 3 after 1s ("non-zero exit (3)")
#   shoal/healthy:1       runs forever; HEALTHCHECK passes
#   shoal/unhealthy:1     runs forever; HEALTHCHECK fails (turns unhealthy after ~2s)
#   shoal/web:1, :2       HTTP on port 80 (busybox httpd): GET / answers "web <version>
#                         <hostname>", so a client sees which version and which container
#                         served it; GET /cgi-bin/slow answers after 1 s; exits 0 at once on
#                         SIGTERM; EXPOSE 80 (services on a network are reached there by name)
set -euo pipefail
cd "$(dirname "$0")"

busybox=/bin/busybox
if [[ ! -x $busybox ]]; then
    if command -v apt-get >/dev/null && [[ $(id -u) == 0 ]]; then
        echo "installing busybox-static (for the test images)" >&2
        apt-get install -y -qq busybox-static >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
    fi
fi
if [[ ! -x $busybox ]] || ! "$busybox" true >/dev/null 2>&1; then
    echo "need a static busybox at $busybox (Debian: apt-get install busybox-static)" >&2
    exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$busybox" "$ctx/busybox"

# A loop that sleeps in the background and waits, so SIGTERM interrupts `wait` and the trap exits.
forever="trap 'exit 0' TERM INT; while :; do sleep 1 & wait \$!; done"

build() { # tag, extra Dockerfile lines, CMD (JSON array)
    local tag=$1 extra=$2 cmd=$3
    cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
$extra
ENTRYPOINT []
CMD $cmd
DOCKERFILE
    local log
    if ! log=$(docker build -q -t "$tag" "$ctx" 2>&1); then
        echo "$log" >&2
        echo "building $tag failed" >&2
        exit 1
    fi
    echo "built $tag"
}

build shoal/busybox:1 'LABEL org.shoal.test.version=1
RUN ["/bin/sh", "-c", "echo 1 > /VERSION"]' "[\"/bin/sh\", \"-c\", \"$forever\"]"
build shoal/busybox:2 'LABEL org.shoal.test.version=2
RUN ["/bin/sh", "-c", "echo 2 > /VERSION"]' "[\"/bin/sh\", \"-c\", \"$forever\"]"
build shoal/exit0:1 '' '["/bin/sh", "-c", "sleep 1; exit 0"]'
build shoal/fail:1 '' '["/bin/sh", "-c", "sleep 1; exit 3"]'
build shoal/healthy:1 'HEALTHCHECK --interval=1s --timeout=1s --retries=1 CMD ["/bin/true"]' "[\"/bin/sh\", \"-c\", \"$forever\"]"
build shoal/unhealthy:1 'HEALTHCHECK --interval=1s --timeout=1s --retries=2 CMD ["/bin/false"]' "[\"/bin/sh\", \"-c\", \"$forever\"]"
# The page is written at start so it names the container (its hostname); /cgi-bin/slow answers
# after a second (requests in flight when a container stops).
cat >"$ctx/slow" <<'CGI'
#!/bin/sh
sleep 1
echo "Content-Type: text/plain"
echo
echo slow $(hostname)
CGI
chmod 0755 "$ctx/slow"
for version in 1 2; do
    web="trap 'exit 0' TERM INT; echo web $version \$(hostname) > /www/index.html; httpd -f -p 80 -h /www & wait \$!"
    build shoal/web:$version "LABEL org.shoal.test.version=$version
RUN [\"/bin/busybox\", \"mkdir\", \"-p\", \"/www/cgi-bin\"]
COPY slow /www/cgi-bin/slow
EXPOSE 80" "[\"/bin/sh\", \"-c\", \"$web\"]"
done
