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
. "$(dirname "$0")/debian.sh"

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/trustgate"
BINARY="$CACHE/kube-apiserver-1.20"

# Bumped when the build changes, so that a binary cached by an older recipe is rebuilt (recipe 1 stamped
# component-base's version only, read by --version; the server's /version reads client-go's).
RECIPE=2
stamped() { [ "$(cat "$BINARY.recipe" 2>/dev/null)" = "$RECIPE" ] && "$BINARY" --version >/dev/null 2>&1; }

needed=(etcd=etcd-server openssl=openssl)
stamped || needed+=(go=golang-go make=make rsync=rsync
    /usr/share/gocode/src/github.com/modern-go/reflect2=golang-github-modern-go-reflect2-dev)
install_missing "${needed[@]}"

if stamped; then
    echo "$BINARY"
    exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# The source package comes through a private apt state: the system's sources and lists stay untouched.
private_apt "$work/apt" "deb-src $(debian_mirror) bookworm main"
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
