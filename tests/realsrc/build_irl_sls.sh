#!/bin/sh
# Build irlserver/irl-srt-server (the maintained classic SLS) for tests, cached under
# $REALSRC_CACHE (default: realsrc-cache in the temp directory). Idempotent. Prints the path of the built
# `srt_server` binary as its LAST line. Nothing of its code is kept in this repository.
#
# Source: $IRL_SLS_SRC (a source tree with its lib/ submodules filled in) when set, else a
# clone of github.com/irlserver/irl-srt-server at IRL_SLS_COMMIT with `git submodule update
# --init` (its pinned spdlog, json, thread-pool, cpp-httplib, CxxUrl).
# - built against Debian's libsrt (libsrt-openssl-dev 1.5.1), not irlserver's SRT fork: the
#   fork's SRTO_SRTLAPATCHES option is a dummy (999) on the compiler line, and the server
#   sets it only where it enables the patches (a `listen_publisher_srtla` port, which tests
#   do not configure; upstream also sets "disabled" on every other listener, which stock
#   libsrt refuses, and then gives up starting);
# - its SRT listeners bind ::ffff:127.0.0.1 instead of the wildcard address (one edit of
#   src/core/SLSSrt.cpp by sed; the HTTP API is put on loopback by `http_bind_addr`);
# - only the srt_server target, unoptimised (-O0, no debug info): a test server, built in
#   a fraction of the Release build's time;
# - missing build deps are installed with apt-get (cmake g++ make libsrt-openssl-dev
#   libssl-dev zlib1g-dev; git only to clone).
# Exit status 3: the source could not be obtained (no IRL_SLS_SRC, no cache, the clone failed):
# the tests against the live server skip with that reason, in CI too (a machine that reaches
# only package registries cannot clone); a failed build is exit status 1 and fails them in CI.
# The cache key is the commit, not where the source came from.
set -eu
IRL_SLS_COMMIT=750ee17c99afd012a2acbe1e787b7655d32be8c1
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${REALSRC_CACHE:-/tmp/realsrc-cache}
log() { echo "irl-sls-build: $*" >&2; }
die() { log "$*"; exit 1; }

need=""
[ -f /usr/include/srt/srt.h ] || need="$need libsrt-openssl-dev"
command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need="$need build-essential"
command -v cmake >/dev/null 2>&1 || need="$need cmake"
[ -f /usr/include/openssl/crypto.h ] || need="$need libssl-dev"
[ -f /usr/include/zlib.h ] || need="$need zlib1g-dev"
[ -n "${IRL_SLS_SRC:-}" ] || command -v git >/dev/null 2>&1 || need="$need git"
if [ -n "$need" ]; then
  log "apt-get install -y$need"
  { apt-get install -y $need || { apt-get update && apt-get install -y $need; }; } >&2 \
    || die "could not install$need"
fi

KEY=$( (cat "$HERE/build_irl_sls.sh"; echo "$IRL_SLS_COMMIT"; g++ --version | head -1;
        dpkg-query -W -f='${Version}' libsrt-openssl-dev 2>/dev/null || true) | sha256sum | cut -c1-12)
DIR="$ROOT/irl-sls-$KEY"
mkdir -p "$ROOT"
(
  flock 9
  if [ ! -x "$DIR/build/bin/srt_server" ]; then
    rm -rf "$DIR"
    mkdir -p "$DIR"
    if [ -n "${IRL_SLS_SRC:-}" ]; then
      log "copying $IRL_SLS_SRC"
      cp -R "$IRL_SLS_SRC" "$DIR/src"
    else
      log "cloning irl-srt-server $IRL_SLS_COMMIT with its submodules"
      { git clone -q https://github.com/irlserver/irl-srt-server "$DIR/src" &&
        git -C "$DIR/src" checkout -q "$IRL_SLS_COMMIT" &&
        git -C "$DIR/src" submodule update -q --init --depth 1; } >&2 \
        || { rm -rf "$DIR"; log "cannot clone irl-srt-server (no GitHub from here?): set IRL_SLS_SRC to a source tree"; exit 3; }
    fi
    [ -f "$DIR/src/lib/cpp-httplib/httplib.h" ] || die "the source tree has no lib/ submodules"
    file="$DIR/src/src/core/SLSSrt.cpp"
    grep -q 'getaddrinfo(s->hostname\[0\] ? s->hostname : NULL, portstr' "$file" \
      || die "SLSSrt.cpp has no wildcard bind to put on loopback (upstream changed?)"
    sed -i 's|getaddrinfo(s->hostname\[0\] ? s->hostname : NULL, portstr|getaddrinfo(s->hostname[0] ? s->hostname : "::ffff:127.0.0.1", portstr|' "$file"
    grep -q 'status = srt_setsockopt(fd, SOL_SOCKET, SRTO_SRTLAPATCHES, &srtlaPatchesValue' "$file" \
      || die "SLSSrt.cpp sets no SRTO_SRTLAPATCHES the way this script expects (upstream changed?)"
    sed -i 's|status = srt_setsockopt(fd, SOL_SOCKET, SRTO_SRTLAPATCHES, &srtlaPatchesValue, sizeof(srtlaPatchesValue));|status = srtlaPatchesValue ? srt_setsockopt(fd, SOL_SOCKET, SRTO_SRTLAPATCHES, \&srtlaPatchesValue, sizeof(srtlaPatchesValue)) : 0;|' "$file"
    log "building srt_server in $DIR/build"
    start=$(date +%s)
    { cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG= \
        "-DCMAKE_CXX_FLAGS=-DSRTO_SRTLAPATCHES='(SRT_SOCKOPT)999'" &&
      make -C "$DIR/build" -j"$(nproc)" srt_server; } >"$DIR/build.log" 2>&1 \
      || { tail -30 "$DIR/build.log" >&2; die "build failed (log: $DIR/build.log)"; }
    [ -x "$DIR/build/bin/srt_server" ] || die "the build succeeded but made no bin/srt_server"
    log "built in $(( $(date +%s) - start ))s"
    find "$DIR/build" -name '*.o' -delete
  fi
) 9>"$ROOT/irl-sls.lock"
echo "$DIR/build/bin/srt_server"
