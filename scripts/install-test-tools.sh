#!/usr/bin/env bash
# Installs the real components the test suite runs against (Debian/Ubuntu packages):
# VictoriaMetrics (+vmagent, vmauth, vmalert), promtool, srt-live-transmit, systemd-analyze, node_exporter,
# qemu-user-static (the aarch64 proof), nginx, caddy, tinyproxy, squid, openssl (transport
# conformance; nginx also gives single-node VM a cluster's URL layout), faketime (libfaketime:
# a clock stepped under a running agent); Node + npm and build tools for the real upstream
# servers of ../shared/realsrc/ (belaUI.js, OpenIRL srt-live-server) and for irlserver/irl-srt-server
# (tests/realsrc/build_irl_sls.sh clones it from GitHub, ~2.5 min to build on 2 cores; where
# GitHub cannot be reached and no build is cached, the tests against it skip saying so), which it
# then prepares: all are cached under $REALSRC_CACHE (default /tmp/realsrc-cache), so a second
# run costs ~1 s.
# Needs root and apt-get; does nothing when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v srt-live-transmit >/dev/null 2>&1 || need+=(srt-tools)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
# vmalert ships in Debian's victoria-metrics package; promtool in prometheus (alert rule tests).
command -v vmalert >/dev/null 2>&1 || need+=(victoria-metrics)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
# the real belaUI (../shared/realsrc/belaui): node, npm, node headers and a compiler for bcrypt
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
[ -f /usr/include/node/node.h ] || [ -f "$(dirname "$(dirname "$(readlink -f "$(command -v node || echo /usr/bin/node)")")")/include/node/node.h" ] \
  || need+=(libnode-dev)
# OpenIRL srt-live-server (../shared/realsrc/sls): built against Debian's libsrt
command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need+=(build-essential)
[ -f /usr/include/srt/srt.h ] || need+=(libsrt-openssl-dev)
[ -f /usr/include/sqlite3.h ] || need+=(libsqlite3-dev)
[ -f /usr/include/zlib.h ] || need+=(zlib1g-dev)
[ -f /usr/include/openssl/crypto.h ] || need+=(libssl-dev)
# irlserver/irl-srt-server (tests/realsrc/build_irl_sls.sh): cmake, and git to clone it
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v git >/dev/null 2>&1 || need+=(git)
# The transport conformance suite: TLS servers, forward proxies, certificates made in the test.
{ command -v nginx || [ -x /usr/sbin/nginx ]; } >/dev/null 2>&1 || need+=(nginx)
command -v caddy >/dev/null 2>&1 || need+=(caddy)
command -v tinyproxy >/dev/null 2>&1 || need+=(tinyproxy)
{ command -v squid || [ -x /usr/sbin/squid ]; } >/dev/null 2>&1 || need+=(squid)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if [ ${#need[@]} -gt 0 ]; then
    echo "install-test-tools: missing ${need[*]}; install them as root with apt-get" \
         "(tests needing them are skipped outside CI)" >&2
  fi
  exit 0
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "install-test-tools: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Prepare the real servers once (idempotent, cached): belaUI's node modules with bcrypt built
# from source (npm registry on the first run), and the sls binary.
for script in ../shared/realsrc/belaui/setup.sh ../shared/realsrc/sls/build.sh tests/realsrc/build_irl_sls.sh; do
  if [ ! -f "$script" ]; then
    echo "install-test-tools: $script is not beside the repository (the tests using it skip, or fail in CI)" >&2
    continue
  fi
  start=$(date +%s)
  if out=$(sh "$script" 2>&1); then
    echo "install-test-tools: $script ready in $(( $(date +%s) - start ))s: $(printf '%s\n' "$out" | tail -1)"
  else
    printf '%s\n' "$out" | tail -20 >&2
    echo "install-test-tools: $script failed (the tests using it fail in CI)" >&2
  fi
done
