# Sourced by the scripts that install or fetch Debian packages.
#   debian_mirror                 the main archive this machine's apt uses (for bookworm, bookworm-updates, ...)
#   debian_security_mirror        the security archive
#   install_missing PROBE=PACKAGE ...
#                                 installs each PACKAGE whose PROBE is missing: a command name, or an absolute
#                                 path that must exist
#   private_apt DIR LINE ...      an apt state of its own in DIR with the given sources.list lines (once each),
#                                 checked
#                                 against Debian's archive keyring; sets the array apt_private to pass to
#                                 apt-get, so the system's sources and package lists stay untouched
# The mirrors are read from deb822 .sources files first, then a one-line sources.list, then deb.debian.org.

_apt_uris() {
    sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null || true
    awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; break}}' \
        /etc/apt/sources.list 2>/dev/null || true
}

debian_mirror() {
    local uri
    uri=$(_apt_uris | tr ' ' '\n' | grep -v security | head -n1)
    echo "${uri:-http://deb.debian.org/debian}"
}

debian_security_mirror() {
    local uri
    uri=$(_apt_uris | tr ' ' '\n' | grep security | head -n1)
    echo "${uri:-http://deb.debian.org/debian-security}"
}

_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_missing() {
    local entry probe missing=()
    for entry in "$@"; do
        probe=${entry%%=*}
        if [ "${probe#/}" != "$probe" ]; then
            [ -e "$probe" ] || missing+=("${entry#*=}")
        else
            command -v "$probe" >/dev/null || missing+=("${entry#*=}")
        fi
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    echo "installing Debian packages: ${missing[*]}" >&2
    _as_root apt-get update -qq
    _as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

private_apt() {
    local state=$1 line
    shift
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial"
    : >"$state/sources.list"
    for line in "$@"; do
        line=${line/ / [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] }
        grep -qxF "$line" "$state/sources.list" || echo "$line" >>"$state/sources.list"
    done
    apt_private=(-o "Dir::Etc::SourceList=$state/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Sandbox::User=root)
    apt-get "${apt_private[@]}" update -qq
}
