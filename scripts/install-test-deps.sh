#!/usr/bin/env bash
# Installs the real components the test suite runs against, on a fresh Debian/Ubuntu machine.
# Idempotent: anything already present is left alone.
#   - Debian packages: docker-registry (CNCF distribution), apache2-utils (htpasswd), skopeo, gnupg, openssl,
#     faketime (runs a verification at a later time, to see expired signatures refused).
#   - cosign, notation and oras: Go binaries that Debian ships only in newer suites. They are downloaded with a
#     private apt state (the system's sources and package database stay untouched), checked by apt against
#     Debian's archive keyring, and unpacked into .tools/ of this checkout. cosign 2 (trixie) writes the
#     legacy `.sig` signatures, cosign 3 (forky, installed as `cosign3`) sigstore bundles as OCI referrers.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
. scripts/debian.sh

install_missing docker-registry=docker-registry htpasswd=apache2-utils skopeo=skopeo gpg=gnupg openssl=openssl \
    faketime=faketime

# package:suite:binary:installed-as for the Go tools taken from newer Debian suites.
NEWER_SUITE_TOOLS="cosign:trixie:cosign:cosign cosign:forky:cosign:cosign3 notation:forky:notation:notation
    oras:trixie:oras:oras"

need_newer=()
for entry in $NEWER_SUITE_TOOLS; do
    IFS=: read -r package suite binary installed <<<"$entry"
    [ -x "$TOOLS/bin/$installed" ] || need_newer+=("$entry")
done
if [ "${#need_newer[@]}" -gt 0 ]; then
    state=$(mktemp -d)
    trap 'rm -rf "$state"' EXIT
    mkdir -p "$TOOLS/bin"
    lines=()
    for entry in "${need_newer[@]}"; do
        IFS=: read -r _ suite _ _ <<<"$entry"
        lines+=("deb $(debian_mirror) $suite main")
    done
    private_apt "$state" "${lines[@]}"
    for entry in "${need_newer[@]}"; do
        IFS=: read -r package suite binary installed <<<"$entry"
        echo "installing $package from Debian $suite into .tools/ as $installed"
        # One directory per suite: the same package may come from two of them.
        mkdir -p "$state/$suite"
        (cd "$state/$suite" && apt-get "${apt_private[@]}" download -qq "$package/$suite")
        dpkg -x "$state/$suite"/"${package}"_*.deb "$state/root-$package-$suite"
        install -m 0755 "$state/root-$package-$suite/usr/bin/$binary" "$TOOLS/bin/$installed"
    done
fi
