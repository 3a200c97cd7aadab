#!/usr/bin/env bash
# Builds kube-apiserver 1.20 from Debian's `kubernetes` source package for the real-API-server tests
# (make e2e-cluster), and installs etcd-server, which runs next to it. Idempotent: a cached binary that runs
# is kept. The binary lives in ${XDG_CACHE_HOME:-$HOME/.cache}/trustgate/ so every checkout shares one build.
#
# Debian 12 carries the 1.20 sources (no binary package); building them needs three fixes:
#   1. the vendored modern-go/reflect2 1.0.1 crashes on Go >= 1.18: use Debian's 1.0.2 instead;
#   2. the generated OpenAPI definitions are not in the tarball: `make gen_openapi`;
#   3. the tree predates Go modules: build in GOPATH mode.
# The version is stamped into the binary (a plain `go build` reports v0.0.0-master, which tools that check
# the server's version, such as helm's kubeVersion, refuse). About 5 minutes and 1.3 GB of RAM on two cores.
# Prints the binary's path on its last line.
set -euo pipefail

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/trustgate"
BINARY="$CACHE/kube-apiserver-1.20"

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v openssl >/dev/null || missing+=(openssl)
# Bumped when the build changes, so that a binary cached by an older recipe is rebuilt (recipe 1 stamped
# component-base's version only, read by --version; the server's /version reads client-go's).
RECIPE=2
stamped() { [ "$(cat "$BINARY.recipe" 2>/dev/null)" = "$RECIPE" ] && "$BINARY" --version >/dev/null 2>&1; }

if ! stamped; then
    command -v go >/dev/null || missing+=(golang-go)
    command -v make >/dev/null || missing+=(make)
    command -v rsync >/dev/null || missing+=(rsync)
    [ -d /usr/share/gocode/src/github.com/modern-go/reflect2 ] || missing+=(golang-github-modern-go-reflect2-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if stamped; then
    echo "$BINARY"
    exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# The source package comes through a private apt state: the system's sources and lists stay untouched.
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
if [ -z "$mirror" ]; then
    mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
        /etc/apt/sources.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
state="$work/apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bookworm main" >"$state/sources.list"
apt_private=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
apt-get "${apt_private[@]}" update -qq
(cd "$work" && apt-get "${apt_private[@]}" source --download-only -qq kubernetes)

gopath="$work/gopath"
tree="$gopath/src/k8s.io/kubernetes"
mkdir -p "$tree"
tar -xzf "$work"/kubernetes_*.orig.tar.gz -C "$tree" --strip-components=1

rm -f "$tree"/vendor/github.com/modern-go/reflect2/*.go
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$tree/vendor/github.com/modern-go/reflect2/"

export GOPATH="$gopath" GOCACHE="$work/gocache" GOPROXY=off CGO_ENABLED=0
(cd "$tree" && make gen_openapi >&2)
# kubernetes_1.20.5+really1.20.2.orig.tar.gz -> 1.20.2
version=$(basename "$work"/kubernetes_*.orig.tar.gz .orig.tar.gz | sed -E 's/^kubernetes_//; s/.*really//')
minor=${version#*.}
ldflags=""
for stamp in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $stamp.gitVersion=v$version -X $stamp.gitMajor=${version%%.*} -X $stamp.gitMinor=${minor%%.*}"
    ldflags="$ldflags -X $stamp.gitTreeState=archive"
done
(cd "$tree" && GO111MODULE=off go build -ldflags "$ldflags" -o "$work/kube-apiserver" \
    k8s.io/kubernetes/cmd/kube-apiserver >&2)

"$work/kube-apiserver" --version >&2
mv "$work/kube-apiserver" "$BINARY"
echo "$RECIPE" >"$BINARY.recipe"
echo "$BINARY"
