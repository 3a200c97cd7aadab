# Sourced by scripts that fetch Debian packages: the mirrors this machine's apt is set up with.
#   debian_mirror            the main archive (for suites like bookworm and bookworm-updates)
#   debian_security_mirror   the security archive
# Both read deb822 .sources files first, then a one-line sources.list, then fall back to deb.debian.org.

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
