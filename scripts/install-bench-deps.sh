#!/usr/bin/env bash
# Installs what `make bench` needs beyond the test components: wrk (a C HTTP load generator, Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
if ! command -v wrk >/dev/null; then
    echo "installing Debian package: wrk"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk
fi
