#!/usr/bin/env bash
# Installs the real components the test suite runs against (Debian/Ubuntu packages):
# VictoriaMetrics (+vmagent, vmauth, vmalert), promtool, srt-live-transmit, systemd-analyze, node_exporter,
# qemu-user-static (the aarch64 proof).
# Needs root and apt-get; does nothing when everything is already there.
set -euo pipefail
need=()
command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
command -v srt-live-transmit >/dev/null 2>&1 || need+=(srt-tools)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v prometheus-node-exporter >/dev/null 2>&1 || need+=(prometheus-node-exporter)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
# vmalert ships in Debian's victoria-metrics package; promtool in prometheus (alert rule tests).
command -v vmalert >/dev/null 2>&1 || need+=(victoria-metrics)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-tools: missing ${need[*]}; install them as root with apt-get" \
       "(tests needing them are skipped outside CI)" >&2
  exit 0
fi
echo "install-test-tools: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
