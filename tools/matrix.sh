#!/usr/bin/env bash
# Run the whole functional suite against every conntrack-tools release of a
# directory of source tarballs (the version matrix).
#
#   tools/matrix.sh TARBALL_DIR [RELEASE ...]
#
# Each release is built (or taken from the build cache) by
# tools/build_conntrack.sh, then laid over /usr/sbin/conntrack for one process
# tree only: a private mount namespace (unshare -m) with the built binary
# bind-mounted over the system's.  Before the suite runs, `conntrack --version`
# inside must print that release, and CONNTRACK_LIB_EXPECT_RELEASE makes the
# suite check it again (tests/functional/test_release.py).
#
# Prints one summary line per release at the end and exits non-zero when any
# release failed.  Needs root.  $CONNTRACK_LIB_MATRIX_TESTS narrows the tests
# (default tests/functional), $CONNTRACK_LIB_PYTEST_ARGS adds pytest arguments.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py="${CONNTRACK_LIB_VENV:-$root/.venv}/bin/python"
[ "$#" -ge 1 ] || { echo "usage: $0 TARBALL_DIR [RELEASE ...]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "matrix: needs root (mount namespaces, network namespaces)" >&2; exit 2; }
cd "$root"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
"$root/tools/build_conntrack.sh" "$@" >"$logs/builds"

# Inside the private mount namespace: lay BINARY over /usr/sbin/conntrack,
# insist that it is RELEASE, then run the rest of the command line.
# shellcheck disable=SC2016
inside='mount --make-rprivate / && mount --bind "$1" /usr/sbin/conntrack || exit 3
version=$(/usr/sbin/conntrack --version 2>&1)
case "$version" in
    "conntrack v$2 "*) ;;
    *) echo "matrix: ERROR: /usr/sbin/conntrack should be $2 but says: $version" >&2; exit 3;;
esac
shift 2
exec "$@"'

# Print "N passed, N failed" (errors count as failed) from a pytest log.
counts() {
    local line passed failed errors
    line=$(grep -E '^=*.*[0-9]+ (passed|failed|errors?)\b.* in [0-9.]+s' "$1" | tail -n1 || true)
    passed=$(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1 || true)
    failed=$(grep -oE '[0-9]+ failed' <<<"$line" | cut -d' ' -f1 || true)
    errors=$(grep -oE '[0-9]+ errors?' <<<"$line" | cut -d' ' -f1 || true)
    echo "${passed:-0} passed, $(( ${failed:-0} + ${errors:-0} )) failed"
}

summary=()
status=0
while read -r release binary; do
    echo "matrix: ===== functional suite on conntrack-tools $release ($binary, at ${SECONDS}s)"
    log="$logs/$release.log"
    rc=0
    # shellcheck disable=SC2086
    unshare -m -- bash -c "$inside" matrix "$binary" "$release" \
        env CONNTRACK_LIB_EXPECT_RELEASE="$release" CONNTRACK_LIB_REQUIRE_FUNCTIONAL=1 \
        "$py" -m pytest -q -p no:cacheprovider -rs ${CONNTRACK_LIB_MATRIX_TESTS:-tests/functional} \
        ${CONNTRACK_LIB_PYTEST_ARGS:-} 2>&1 | tee "$log" || rc=$?
    result=$(counts "$log")
    if [ "$rc" -ne 0 ] || [[ "$result" != *" 0 failed" ]] || [[ "$result" == "0 passed"* ]]; then
        status=1
        summary+=("matrix: conntrack-tools $release: FAILED: $result (exit $rc)")
    else
        summary+=("matrix: conntrack-tools $release: ok: $result")
    fi
done <"$logs/builds"

printf '%s\n' "${summary[@]}"
exit "$status"
