#!/usr/bin/env bash
# Starts the containerised cluster of docker-compose.yml: manager1 first (it initialises the
# cluster: CA, admin bundle, join tokens), then the other managers and the agents with the tokens
# read from it. Needs the image: deploy/image/build.sh. Stop: docker-compose ... down -v.
set -euo pipefail
cd "$(dirname "$0")"
compose=(docker-compose -f docker-compose.yml -p shoalcluster)
"${compose[@]}" up -d manager1
for _ in $(seq 1 100); do
    if docker exec shoalcluster_manager1_1 shoal cluster info >/dev/null 2>&1; then break; fi
    sleep 0.2
done
SHOAL_MANAGER_TOKEN=$(docker exec shoalcluster_manager1_1 shoal cluster join-token -q manager)
SHOAL_WORKER_TOKEN=$(docker exec shoalcluster_manager1_1 shoal cluster join-token -q worker)
export SHOAL_MANAGER_TOKEN SHOAL_WORKER_TOKEN
"${compose[@]}" up -d
echo "started; try: docker exec shoalcluster_manager1_1 shoal node ls"
