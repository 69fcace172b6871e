#!/usr/bin/env bash
# Remove belabox-metrics (the metrics-collector agent).
#
#   sudo ./uninstall.sh [--purge] [--root DIR] [--no-systemctl]
#
# Stops, disables and removes the metrics-collector unit and removes /opt/belabox-metrics (every
# venv). Keeps /etc/belabox-metrics (your config) and /var/lib/belabox-metrics (samples not yet
# uploaded) unless --purge. The system user "metrics" is always kept (files elsewhere may be owned
# by it); remove it with: userdel metrics
#
# Options:
#   --purge          also delete /etc/belabox-metrics and /var/lib/belabox-metrics
#   --root DIR       prefix for every path (the same as given to install.sh)
#   --no-systemctl   do not call systemctl (staging trees, tests)
set -euo pipefail

SERVICE="metrics-collector"

say() { printf 'uninstall.sh: %s\n' "$*"; }
die() { printf 'uninstall.sh: ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

ROOT=""
NO_SYSTEMCTL=0
PURGE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --root) [[ $# -ge 2 ]] || die "--root needs a directory"; ROOT="$2"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --no-systemctl) NO_SYSTEMCTL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

if [[ -n "$ROOT" ]]; then
    [[ -d "$ROOT" ]] || die "--root $ROOT does not exist"
    ROOT="$(cd "$ROOT" && pwd)"
    [[ "$ROOT" == "/" ]] && ROOT=""
fi
if [[ -n "$ROOT" && $NO_SYSTEMCTL -eq 0 ]]; then
    die "--root $ROOT is not this system while systemctl would act on it: add --no-systemctl"
fi
if [[ $NO_SYSTEMCTL -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 ...)"
fi

OPT="$ROOT/opt/belabox-metrics"
ETC_DIR="$ROOT/etc/belabox-metrics"
DATA_DIR="$ROOT/var/lib/belabox-metrics"
UNIT="$ROOT/etc/systemd/system/$SERVICE.service"

if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    say "stopping and disabling $SERVICE"
    systemctl stop "$SERVICE" 2>/dev/null || true
    systemctl disable "$SERVICE" >/dev/null 2>&1 || true
fi

removed=()
if [[ -e "$UNIT" ]]; then
    rm -f "$UNIT"
    removed+=("$UNIT")
fi
if [[ $NO_SYSTEMCTL -eq 0 ]]; then
    systemctl daemon-reload
    systemctl reset-failed "$SERVICE" >/dev/null 2>&1 || true
fi
if [[ -e "$OPT" ]]; then
    rm -rf "$OPT"
    removed+=("$OPT")
fi

kept=()
for dir in "$ETC_DIR" "$DATA_DIR"; do
    [[ -e "$dir" ]] || continue
    if [[ $PURGE -eq 1 ]]; then
        rm -rf "$dir"
        removed+=("$dir")
    else
        kept+=("$dir")
    fi
done

echo
say "removed: ${removed[*]:-nothing (not installed)}"
if [[ ${#kept[@]} -gt 0 ]]; then
    say "kept:    ${kept[*]} (config and not-yet-uploaded samples; delete with --purge)"
fi
if [[ $NO_SYSTEMCTL -eq 0 ]] && getent passwd metrics >/dev/null 2>&1; then
    say "kept:    system user metrics (remove with: userdel metrics)"
fi
