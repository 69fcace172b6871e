#!/usr/bin/env bash
# One command on a fresh dev box: set up .venv, then run the agent on its embedded default
# config, uploading to a metrics-receiver it starts on 127.0.0.1 (no root needed).
# Extra arguments go to `metrics-collector dev` (e.g. --duration 30, --port 8081).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-dev.sh
exec .venv/bin/metrics-collector dev "$@"
