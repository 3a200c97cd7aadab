#!/usr/bin/env bash
# Installs the real components the test suite runs against, on a fresh Debian/Ubuntu machine.
# Idempotent: anything already present is left alone.
#   - Debian packages: docker-registry (CNCF distribution), apache2-utils (htpasswd), skopeo, gnupg, openssl,
#     faketime (runs a verification at a later time, to see expired signatures refused).
#   - cosign and notation: Go binaries that Debian ships only in newer suites. They are downloaded with a
#     private apt state (the system's sources and package database stay untouched), checked by apt against
#     Debian's archive keyring, and unpacked into .tools/ of this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"

sudo_if_needed() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v gpg >/dev/null || missing+=(gnupg)
command -v openssl >/dev/null || missing+=(openssl)
command -v faketime >/dev/null || missing+=(faketime)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    sudo_if_needed apt-get update -qq
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# name:suite:binary for the Go tools taken from newer Debian suites.
NEWER_SUITE_TOOLS="cosign:trixie:cosign notation:forky:notation"

need_newer=()
for entry in $NEWER_SUITE_TOOLS; do
    IFS=: read -r package suite binary <<<"$entry"
    [ -x "$TOOLS/bin/$binary" ] || need_newer+=("$entry")
done
if [ "${#need_newer[@]}" -gt 0 ]; then
    mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
    if [ -z "$mirror" ]; then
        mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' \
            /etc/apt/sources.list 2>/dev/null || true)
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
    state=$(mktemp -d)
    trap 'rm -rf "$state"' EXIT
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$TOOLS/bin"
    : >"$state/sources.list"
    for entry in "${need_newer[@]}"; do
        IFS=: read -r _ suite _ <<<"$entry"
        grep -q " $suite " "$state/sources.list" ||
            echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >>"$state/sources.list"
    done
    apt_private=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
    apt-get "${apt_private[@]}" update -qq
    for entry in "${need_newer[@]}"; do
        IFS=: read -r package suite binary <<<"$entry"
        echo "installing $package from Debian $suite into .tools/"
        (cd "$state" && apt-get "${apt_private[@]}" download -qq "$package/$suite")
        dpkg -x "$state"/"${package}"_*.deb "$state/root-$package"
        install -m 0755 "$state/root-$package/usr/bin/$binary" "$TOOLS/bin/$binary"
    done
fi
