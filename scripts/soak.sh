#!/usr/bin/env bash
# Soak the agent: scripts/soak.sh MINUTES [options of scripts/soak.py]
# Runs the agent with short intervals against a real VictoriaMetrics on loopback, restarts
# VM periodically, samples the agent's RSS every 5 s, and at the end audits collected /
# stored / delivered / duplicates. Exit status 1 on any loss, duplicate or RSS growth
# beyond the bound after warm-up. Needs the Debian package victoria-metrics and .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
    echo "usage: scripts/soak.sh MINUTES [--report FILE] [--restart-every S] [--rss-bound-kib N]" >&2
    exit 2
fi
exec .venv/bin/python scripts/soak.py "$@"
