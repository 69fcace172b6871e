#!/usr/bin/env bash
# Build offline install bundles of belabox-metrics into dist/.
#
#   scripts/build.sh [--only host|aarch64] [--python-versions "3.10 3.11"] [--out DIR]
#
# Bundles (one .tar.gz each, unpacking to a directory of the same name):
#   belabox-metrics-<version>-linux-aarch64.tar.gz   for the board (Orange Pi 5 / RK3588):
#       the project wheel + every runtime dependency as manylinux aarch64 wheels for each
#       CPython in --python-versions, so the board needs no network and no compiler.
#   belabox-metrics-<version>-<os>-<uname -m>.tar.gz  for this machine's $PYTHON (tests, x86 boxes).
# Each holds: wheels/ (incl. a pip wheel, so install.sh needs neither network nor the distro's
# python3-venv/ensurepip), install.sh, uninstall.sh, config.yaml, metrics-collector.service,
# VERSION and SHA256SUMS.
#
# Needs the package index (or pip's cache) to fetch the build backend and the dependency wheels.
# $PYTHON picks the interpreter (default python3); it only has to have pip.
set -euo pipefail

say() { printf 'build.sh: %s\n' "$*"; }
die() { printf 'build.sh: ERROR: %s\n' "$*" >&2; exit 1; }

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
ONLY=""
PYTHON_VERSIONS="3.10 3.11"
OUT="$REPO/dist"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --only) [[ $# -ge 2 ]] || die "--only needs host or aarch64"; ONLY="$2"; shift 2 ;;
        --only=*) ONLY="${1#*=}"; shift ;;
        --python-versions) [[ $# -ge 2 ]] || die "--python-versions needs a list"; PYTHON_VERSIONS="$2"; shift 2 ;;
        --python-versions=*) PYTHON_VERSIONS="${1#*=}"; shift ;;
        --out) [[ $# -ge 2 ]] || die "--out needs a directory"; OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#*=}"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done
case "$ONLY" in
    ""|host|aarch64) ;;
    *) die "--only takes host or aarch64, not '$ONLY'" ;;
esac
for pyver in $PYTHON_VERSIONS; do
    [[ "$pyver" =~ ^3\.[0-9]+$ ]] || die "--python-versions: '$pyver' is not like 3.10"
done

"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set \$PYTHON to an interpreter with pip)"

# The version lives in pyproject.toml only ([project] version = "X"); no tomllib on 3.10.
VERSION="$(sed -n '/^\[project\]/,/^\[/{s/^version[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p;}' "$REPO/pyproject.toml" | head -n 1)"
[[ -n "$VERSION" ]] || die "no version = \"...\" in the [project] table of pyproject.toml"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/belabox-metrics-build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

sha256_lines() {  # sha256sum-format lines for the given relative paths (Linux or macOS)
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$@"; else shasum -a 256 "$@"; fi
}

pip_or_explain() {  # pip_or_explain WHAT LOG -- pip args...: run pip; on failure name the package
    local what="$1" log="$2"; shift 3
    if "$PYTHON" -m pip "$@" >"$log" 2>&1; then
        return 0
    fi
    cat "$log" >&2
    # Unreachable index first: pip then also says "No matching distribution", which would
    # wrongly blame the package.
    if grep -qiE 'NewConnectionError|Failed to establish|name resolution|Name or service not known|Network is unreachable|ProxyError|ConnectTimeout|ReadTimeout|Retrying \(Retry' "$log"; then
        die "$what: cannot reach the package index (network) - pip output above"
    fi
    local missing
    missing="$(sed -n 's/.*No matching distribution found for \([^ ]*\).*/\1/p' "$log" | head -n 1)"
    # pip says the same "No matching distribution" when the index is unreachable (and with
    # PIP_RETRIES=0 prints no connection error at all): probe with pip itself, always a wheel.
    if [[ -n "$missing" ]] && ! "$PYTHON" -m pip download --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$WORK/index-probe" pip >/dev/null 2>&1; then
        die "$what: cannot reach the package index (network): even pip's own wheel cannot be downloaded"
    fi
    if [[ -n "$missing" ]]; then
        die "$what: no binary wheel for '$missing' (this package publishes no wheel for this platform/Python)"
    fi
    die "$what: pip failed - output above"
}

# ---- 1. The project wheel, built from a clean copy so the working tree gets no build/ or egg-info.
SRC="$WORK/src-copy"
mkdir -p "$SRC"
cp "$REPO/pyproject.toml" "$SRC/"
for extra in README.md LICENSE setup.cfg MANIFEST.in; do
    [[ -e "$REPO/$extra" ]] && cp "$REPO/$extra" "$SRC/"
done
if [[ ! -e "$SRC/README.md" ]] && grep -q '^readme *= *"README.md"' "$SRC/pyproject.toml"; then
    say "warning: README.md is missing; building with an empty one"
    : >"$SRC/README.md"
fi
(cd "$REPO" && tar cf - --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' src) | (cd "$SRC" && tar xf -)

PROJECT_WHEELS="$WORK/project-wheel"
say "building the belabox-metrics $VERSION wheel with $("$PYTHON" -c 'import sys; print(sys.executable)')"
pip_or_explain "project wheel" "$WORK/pip-wheel.log" -- \
    wheel --no-deps --disable-pip-version-check --wheel-dir "$PROJECT_WHEELS" "$SRC"
PROJECT_WHEEL="$(ls "$PROJECT_WHEELS"/belabox_metrics-"$VERSION"-*.whl 2>/dev/null | head -n 1 || true)"
[[ -n "$PROJECT_WHEEL" ]] || die "pip wheel produced no belabox_metrics-$VERSION-*.whl in $PROJECT_WHEELS"

# ---- 2. Bundles.
BUNDLES=()

make_bundle() {  # make_bundle PLATFORM_NAME: stage $WORK/<name>/wheels first, then call this
    local name="belabox-metrics-$VERSION-$1"
    local stage="$WORK/$name"
    cp "$REPO/scripts/install.sh" "$REPO/scripts/uninstall.sh" "$stage/"
    chmod 0755 "$stage/install.sh" "$stage/uninstall.sh"
    cp "$REPO/configs/config.yaml" "$stage/config.yaml"
    cp "$REPO/systemd/metrics-collector.service" "$stage/metrics-collector.service"
    printf '%s\n' "$VERSION" >"$stage/VERSION"
    (cd "$stage" && find . -type f | sed 's#^\./##' | LC_ALL=C sort \
        | while IFS= read -r f; do sha256_lines "$f"; done) >"$WORK/SHA256SUMS.tmp"
    mv "$WORK/SHA256SUMS.tmp" "$stage/SHA256SUMS"
    local tarball="$OUT/$name.tar.gz"
    local tar_opts=()
    if tar --version 2>/dev/null | grep -q 'GNU tar'; then
        # root-owned when unpacked with sudo, stable order and times: reproducible tarballs
        tar_opts=(--owner=0 --group=0 --numeric-owner --sort=name --mtime='@0')
    fi
    tar ${tar_opts[@]+"${tar_opts[@]}"} -czf "$tarball.tmp" -C "$WORK" "$name"
    mv -f "$tarball.tmp" "$tarball"
    BUNDLES+=("$tarball")
    say "wrote $tarball"
}

download_pip() {  # download_pip DEST [platform args...]: a pip wheel for install.sh to bootstrap
    local dest="$1"; shift
    pip_or_explain "pip wheel" "$WORK/pip-download-pip.log" -- \
        download --disable-pip-version-check --only-binary=:all: --no-deps --dest "$dest" "$@" pip
}

if [[ -z "$ONLY" || "$ONLY" == "aarch64" ]]; then
    stage="$WORK/belabox-metrics-$VERSION-linux-aarch64"
    mkdir -p "$stage/wheels"
    cp "$PROJECT_WHEEL" "$stage/wheels/"
    for pyver in $PYTHON_VERSIONS; do
        say "downloading aarch64 wheels for CPython $pyver"
        # Both spellings of the glibc 2.17 tag: wheels are published under either or both.
        plat=(--platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64
              --python-version "$pyver" --implementation cp)
        pip_or_explain "aarch64 CPython $pyver" "$WORK/pip-download-aarch64-$pyver.log" -- \
            download --disable-pip-version-check --only-binary=:all: "${plat[@]}" \
            --dest "$stage/wheels" "$PROJECT_WHEEL"
        download_pip "$stage/wheels" "${plat[@]}"
        # A pure-Python wheel can satisfy a dependency, but every compiled one must be aarch64.
        cpver="cp${pyver/./}"
        for whl in "$stage"/wheels/*-"$cpver"-*.whl; do
            [[ -e "$whl" ]] || continue
            [[ "$whl" == *aarch64*.whl ]] || die "$(basename "$whl") is not an aarch64 wheel"
        done
    done
    make_bundle linux-aarch64
fi

if [[ -z "$ONLY" || "$ONLY" == "host" ]]; then
    host_platform="$(uname -s | tr '[:upper:]' '[:lower:]')-$(uname -m)"
    stage="$WORK/belabox-metrics-$VERSION-$host_platform"
    mkdir -p "$stage/wheels"
    cp "$PROJECT_WHEEL" "$stage/wheels/"
    say "downloading wheels for the host's Python ($("$PYTHON" -c 'import platform; print(platform.python_version())'), $host_platform)"
    pip_or_explain "host $host_platform" "$WORK/pip-download-host.log" -- \
        download --disable-pip-version-check --only-binary=:all: --dest "$stage/wheels" "$PROJECT_WHEEL"
    download_pip "$stage/wheels"
    make_bundle "$host_platform"
fi

# ---- 3. Summary.
echo
say "summary (version $VERSION)"
for tarball in "${BUNDLES[@]}"; do
    printf '  %s  (%s bytes)\n' "${tarball#"$REPO"/}" "$(wc -c <"$tarball" | tr -d ' ')"
    tar tzvf "$tarball" | awk '$1 !~ /^d/ { printf "    %10s  %s\n", $3, $NF }'
done
