#!/usr/bin/env bash
# Build the `conntrack` CLI of conntrack-tools releases from a directory of
# source tarballs, for the version matrix (tools/matrix.sh).
#
#   tools/build_conntrack.sh TARBALL_DIR [RELEASE ...]
#
# TARBALL_DIR holds conntrack-tools-X.Y.Z.tar.{gz,bz2,xz} files: netfilter's
# release downloads (with a generated configure) or tag snapshots (without
# one; autoreconf -fi generates it).  Without RELEASE arguments every release
# found there is built.  A release that needs a newer libnetfilter_conntrack
# than the system's is linked against a libnetfilter_conntrack tarball of the
# same directory, built into a prefix of its own.  SHA256SUMS in the directory,
# when present, is checked for every tarball used.
#
# Builds are cached outside the clone, in $CONNTRACK_LIB_BUILD_CACHE (default
# /var/cache/conntrack-lib/builds), keyed by the sha256 of the tarballs they
# come from, so a changed tarball is never served a stale build.  Releases are
# built two at a time ($CONNTRACK_LIB_BUILD_JOBS).
#
# Prints one line per release on stdout: "RELEASE /path/to/conntrack".
# Progress and build logs (on failure) go to stderr.
set -euo pipefail

cache="${CONNTRACK_LIB_BUILD_CACHE:-/var/cache/conntrack-lib/builds}"
jobs="${CONNTRACK_LIB_BUILD_JOBS:-2}"
build_debs=(autoconf automake libtool pkg-config make gcc libc6-dev bison flex
            libnfnetlink-dev libmnl-dev libnetfilter-conntrack-dev libtirpc-dev
            xz-utils bzip2)

say() { echo "build_conntrack: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

# Print the conntrack-tools tarball of RELEASE in DIR (first of gz, bz2, xz).
tarball_of() {
    local dir=$1 name=$2 ext
    for ext in tar.gz tar.bz2 tar.xz; do
        if [ -f "$dir/$name.$ext" ]; then echo "$dir/$name.$ext"; return 0; fi
    done
    return 1
}

# List the conntrack-tools releases found in DIR, oldest first.
releases_in() {
    local f
    for f in "$1"/conntrack-tools-*.tar.*; do
        [ -e "$f" ] || continue
        f=${f##*/conntrack-tools-}
        echo "${f%.tar.*}"
    done | sort -u -V
}

# Install the Debian build dependencies that are missing (apt-get update once).
ensure_build_deps() {
    local missing=() deb
    for deb in "${build_debs[@]}"; do
        dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$deb")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing build packages ${missing[*]}; install them or run as root"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Check FILE against DIR/SHA256SUMS when that list exists and names it.
verify_sum() {
    local file=$1 dir sums want have
    dir=$(dirname "$file")
    sums="$dir/SHA256SUMS"
    [ -f "$sums" ] || return 0
    want=$(awk -v n="$(basename "$file")" '$2 == n || $2 == "*" n {print $1}' "$sums")
    [ -n "$want" ] || die "$(basename "$file") is not listed in $sums"
    have=$(sha256sum "$file" | cut -d' ' -f1)
    [ "$want" = "$have" ] || die "checksum mismatch for $file (SHA256SUMS $want, file $have)"
}

# Print the cache key of FILE: its sha256 (prefix) and the recipe's version,
# bumped whenever the recipe below changes what a build produces.
recipe=1
sha_of() { echo "r$recipe-$(sha256sum "$1" | cut -c1-16)"; }

# Unpack TARBALL into a fresh WORKDIR and print the source directory.
unpack() {
    local tarball=$1 work=$2
    rm -rf "$work" && mkdir -p "$work"
    tar -xf "$tarball" -C "$work"
    local src
    src=$(find "$work" -mindepth 1 -maxdepth 1 -type d | head -n1)
    [ -n "$src" ] || die "$tarball holds no directory"
    echo "$src"
}

# Generate configure when the tarball is a tag snapshot without one.
ensure_configure() {
    if [ ! -x "$1/configure" ]; then
        (cd "$1" && autoreconf -fi)
    fi
}

# Run a build step with its output in LOG; show the log and fail when it fails.
logged() {
    local log=$1; shift
    if ! "$@" >>"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "failed: $* (full log: $log)"
    fi
}

# Build libnetfilter_conntrack from TARBALL into the cache; print its prefix.
build_libnfct() {
    local tarball=$1 base prefix work src log
    base=$(basename "$tarball"); base=${base%.tar.*}
    prefix="$cache/$base-$(sha_of "$tarball")"
    # Two releases may need the same library: one builds, the other waits.
    exec {lock}>"$prefix.lock"
    flock "$lock"
    if [ ! -f "$prefix/.complete" ]; then
        say "building $base"
        work="$prefix.work"; log="$prefix.log"; : >"$log"
        src=$(unpack "$tarball" "$work")
        logged "$log" ensure_configure "$src"
        logged "$log" sh -c "cd '$src' && ./configure --prefix='$prefix' --disable-static"
        logged "$log" make -C "$src" -j"$jobs"
        logged "$log" make -C "$src" install
        rm -rf "$work"
        touch "$prefix/.complete"
    fi
    exec {lock}>&-
    echo "$prefix"
}

# Print the tarball of the oldest libnetfilter_conntrack in DIR at least VERSION.
libnfct_tarball() {
    local dir=$1 want=$2 f v
    for f in "$dir"/libnetfilter_conntrack-*.tar.*; do
        [ -e "$f" ] || continue
        v=${f##*/libnetfilter_conntrack-}; v=${v%.tar.*}
        echo "$v $f"
    done | sort -V | while read -r v f; do
        if [ "$(printf '%s\n%s\n' "$want" "$v" | sort -V | head -n1)" = "$want" ]; then
            echo "$f"; break
        fi
    done
}

# Build the conntrack CLI of RELEASE from DIR; print "RELEASE BINARY".
build_release() {
    local dir=$1 release=$2 tarball key out work src log need lib libtar env=()
    tarball=$(tarball_of "$dir" "conntrack-tools-$release") \
        || die "no conntrack-tools-$release tarball in $dir"
    verify_sum "$tarball"
    key=$(sha_of "$tarball")
    # The library the release needs is part of the key: peek at configure.ac.
    need=$(tar -xOf "$tarball" --wildcards '*/configure.ac' | \
           sed -n 's/.*libnetfilter_conntrack >= \([0-9.]*\).*/\1/p' | head -n1)
    if [ -n "$need" ] && ! pkg-config --atleast-version="$need" libnetfilter_conntrack; then
        libtar=$(libnfct_tarball "$dir" "$need")
        [ -n "$libtar" ] || die "conntrack-tools $release needs libnetfilter_conntrack >= $need: \
not on this system and no libnetfilter_conntrack tarball >= $need in $dir"
        verify_sum "$libtar"
        key="$key-$(sha_of "$libtar")"
    fi
    out="$cache/conntrack-tools-$release-$key"
    if [ ! -x "$out/bin/conntrack" ]; then
        if [ -n "${libtar:-}" ]; then
            lib=$(build_libnfct "$libtar")
            env=(PKG_CONFIG_PATH="$lib/lib/pkgconfig" LDFLAGS="-Wl,-rpath,$lib/lib")
        fi
        say "building conntrack-tools $release"
        work="$out.work"; log="$out.log"; : >"$log"
        src=$(unpack "$tarball" "$work")
        logged "$log" ensure_configure "$src"
        logged "$log" env "${env[@]}" sh -c "cd '$src' && ./configure --disable-cthelper \
--disable-cttimeout --disable-systemd"
        # `make -C src conntrack` alone misses the extensions it links.
        logged "$log" make -C "$src/extensions" -j"$jobs"
        logged "$log" make -C "$src/src" -j"$jobs" conntrack
        mkdir -p "$out/bin.tmp"
        cp "$src/src/conntrack" "$out/bin.tmp/conntrack"
        "$out/bin.tmp/conntrack" --version 2>&1 | grep -q "v$release " \
            || die "built $release binary reports: $("$out/bin.tmp/conntrack" --version 2>&1)"
        rm -rf "$out/bin" && mv "$out/bin.tmp" "$out/bin"
        rm -rf "$work"
        say "built conntrack-tools $release"
    fi
    echo "$release $out/bin/conntrack"
}

main() {
    [ "$#" -ge 1 ] || die "usage: $0 TARBALL_DIR [RELEASE ...]"
    local dir releases
    dir=$(cd "$1" && pwd) || die "no such directory: $1"
    shift
    if [ "$#" -gt 0 ]; then releases=("$@"); else mapfile -t releases < <(releases_in "$dir"); fi
    [ "${#releases[@]}" -gt 0 ] || die "no conntrack-tools-*.tar.* in $dir"
    mkdir -p "$cache"
    ensure_build_deps
    export -f build_release build_libnfct tarball_of verify_sum sha_of unpack ensure_configure \
        logged libnfct_tarball say die
    export cache jobs recipe
    # Newest first: they may also need the library built, the longest chain.
    printf '%s\n' "${releases[@]}" | sort -r -V | \
        xargs -P "$jobs" -I{} bash -c 'build_release "$0" "$1"' "$dir" {} | sort -V
}

main "$@"
