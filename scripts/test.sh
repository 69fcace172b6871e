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

# The BELABOX image's Python may be 3.10: when a 3.10 interpreter is here, the unit tests run
# on it too (before the full suite, whose summary stays the last line).
if [ $# -eq 0 ]; then
  py310=""
  for candidate in python3.10 "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python; do
    if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' 2>/dev/null; then
      py310=$candidate; break
    fi
  done
  if [ -n "$py310" ]; then
    echo "== pytest tests/unit on Python 3.10 ($py310)"
    [ -x .venv310/bin/python ] || "$py310" -m venv .venv310
    .venv310/bin/python -m pip install --quiet -e '.[dev,receiver]'
    .venv310/bin/python -m pytest -q -p no:cacheprovider tests/unit
  else
    echo "== no Python 3.10 here: unit tests run on $(.venv/bin/python --version) only"
  fi
fi

echo "== pytest"
exec .venv/bin/python -m pytest "$@"
