#!/usr/bin/env bash
# One command runs the whole test suite on a fresh machine: installs the real components
# the tests use (as root on Debian), sets up .venv, then lint, type check and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k uploader -x).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-tools.sh
scripts/setup-dev.sh
echo "== ruff"; .venv/bin/ruff check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== pytest"
exec .venv/bin/python -m pytest "$@"
