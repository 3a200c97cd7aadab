#!/usr/bin/env bash
# Builds the trustgate container image from the Dockerfile without any image registry: both bases are root file
# systems made from Debian packages with mmdebstrap and imported as local images, and the Dockerfile is built by
# buildah with vfs storage and chroot isolation (no daemon, no overlay mounts, no user namespaces needed).
#
#   scripts/build-image.sh [--oci-layout DIR] [--oci-archive FILE] [--push REFERENCE] [--insecure-push]
#                          [--refresh-bases] [--record FILE]
#
# The image is written as an OCI layout (default build/image, tag latest); --oci-archive also writes it as one
# tar file, what an admin carries into an air-gapped cluster; --push copies it to a registry (--insecure-push:
# plain HTTP). The size and what it is made of are printed, and with --record written into the
# measured section of FILE. Bases are cached in ~/.cache/trustgate/image under a key of what they are made of;
# --refresh-bases makes them anew, e.g. to take Debian's security updates.
# Installs buildah and mmdebstrap from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/debian.sh

oci_layout=build/image
oci_archive=""
push=""
tls_verify=true
refresh=false
record=""
while [ $# -gt 0 ]; do
    case "$1" in
        --oci-layout) oci_layout=$2; shift 2 ;;
        --oci-archive) oci_archive=$2; shift 2 ;;
        --push) push=$2; shift 2 ;;
        --insecure-push) tls_verify=false; shift ;;
        --refresh-bases) refresh=true; shift ;;
        --record) record=$2; shift 2 ;;
        *) echo "usage: $0 [--oci-layout DIR] [--oci-archive FILE] [--push REFERENCE] [--insecure-push]" \
                "[--refresh-bases] [--record FILE]" >&2
           exit 2 ;;
    esac
done

install_missing buildah=buildah mmdebstrap=mmdebstrap

started=$SECONDS
cache=${XDG_CACHE_HOME:-$HOME/.cache}/trustgate/image
mkdir -p "$cache"
# One build at a time per cache: the storage is shared, and a build prunes the images it no longer needs.
exec {lock}>"$cache/lock"
if ! flock --nonblock "$lock"; then
    echo "waiting for another image build using $cache" >&2
    flock "$lock"
fi
buildah=(buildah --root "$cache/storage" --runroot "$cache/run" --storage-driver vfs)

suite=bookworm
mirror=$(debian_mirror)
security=$(debian_security_mirror)
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main")
# Merged /usr set up the way Debian's installer does it (usr-is-merged, not the usrmerge converter and its perl).
# Documentation, manual pages and translations are left out; copyright files stay.
slim=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --dpkgopt='path-exclude=/usr/share/locale/*')
build_base=(--variant=minbase --include=python3,python3-venv,ca-certificates,binutils "${slim[@]}")
# Essential packages and what trustgate runs, no apt. glibc's iconv modules go too: Python has codecs of its own,
# and gpg in the C locale converts only between ASCII and UTF-8, which glibc has built in.
runtime_base=(--variant=essential --include=python3,gpg,ca-certificates "${slim[@]}"
              --dpkgopt='path-exclude=/usr/lib/*/gconv/*')

# Prints the local image name of a base made with these mmdebstrap options, making and importing it if needed.
base_image() {
    local name=$1; shift
    local key image tarball
    key=$(printf '%s\n' "$suite" "${sources[@]}" "$@" | sha256sum | cut -c1-16)
    image="localhost/trustgate-$name-base:$key"
    tarball="$cache/$name-base-$key.tar"
    if [ "$refresh" = true ]; then
        rm -rf "$tarball"
        "${buildah[@]}" rmi "$image" >/dev/null 2>&1 || true
    fi
    if ! "${buildah[@]}" inspect --type image "$image" >/dev/null 2>&1; then
        if [ ! -s "$tarball" ]; then
            echo "making the $name base with mmdebstrap ($suite from $mirror)" >&2
            if ! mmdebstrap --quiet --format=tar "$@" "$suite" "$tarball.partial" "${sources[@]}" \
                    >"$cache/$name-base.log" 2>&1; then
                tail -n 30 "$cache/$name-base.log" >&2
                exit 1
            fi
            mv "$tarball.partial" "$tarball"
        fi
        local container
        container=$("${buildah[@]}" from scratch)
        "${buildah[@]}" add --quiet "$container" "$tarball" / >&2
        "${buildah[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/sh "$container" >&2
        "${buildah[@]}" commit --quiet --rm "$container" "$image" >/dev/null
    fi
    echo "$image"
}

build_image=$(base_image build "${build_base[@]}")
runtime_image=$(base_image runtime "${runtime_base[@]}")

# pip reaches its index with this machine's CA bundle and configuration; they are mounted for the build only and
# are not part of the image.
ca_bundle=$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')
ca_bundle=${ca_bundle:-/etc/ssl/certs/ca-certificates.crt}
mounts=(--volume "$ca_bundle:$ca_bundle:ro")
for config in /etc/pip.conf /etc/xdg/pip; do
    [ -e "$config" ] && mounts+=(--volume "$config:$config:ro")
done
version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
image=localhost/trustgate:$version
built_at=$SECONDS
"${buildah[@]}" bud --quiet --isolation chroot --pull=false \
    --build-arg "BUILD_BASE=$build_image" --build-arg "RUNTIME_BASE=$runtime_image" \
    "${mounts[@]}" --tag "$image" --file Dockerfile . >/dev/null
build_seconds=$((SECONDS - built_at))
# The image this tag named before is a whole copy in vfs storage: drop it.
"${buildah[@]}" rmi --prune >/dev/null

rm -rf "$oci_layout"
mkdir -p "$(dirname "$oci_layout")"
"${buildah[@]}" push --quiet "$image" "oci:$oci_layout:latest"
if [ -n "$oci_archive" ]; then
    rm -f "$oci_archive"
    mkdir -p "$(dirname "$oci_archive")"
    "${buildah[@]}" push --quiet "$image" "oci-archive:$oci_archive:$version"
fi
if [ -n "$push" ]; then
    "${buildah[@]}" push --quiet --tls-verify="$tls_verify" "$image" "docker://$push"
fi

container=$("${buildah[@]}" from --pull-never "$image")
trap '"${buildah[@]}" rm "$container" >/dev/null' EXIT
scripts/image-report.py "$oci_layout" "$("${buildah[@]}" mount "$container")" "$build_seconds" "$record"
echo "built $image in $((SECONDS - started)) s; OCI layout: $oci_layout${oci_archive:+; OCI archive: $oci_archive}"
