#!/usr/bin/env bash
# Long fuzzing of metrics-receiver: scripts/fuzz-receiver.sh [EXAMPLES] (default 20000).
# The CI property (tests/unit/test_receiver_fuzz.py, 200 examples) with EXAMPLES examples,
# against the real metrics-receiver process, whose RSS growth after warm-up is bounded
# (BELABOX_FUZZ_RSS_MIB, default 32). Prints the count run;
# BELABOX_FUZZ_REPORT=FILE also writes it there as JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-20000}"
if ! [[ "$examples" =~ ^[0-9]+$ ]] || [ "$examples" -lt 1 ]; then
    echo "usage: scripts/fuzz-receiver.sh [EXAMPLES]   (a positive number, default 20000)" >&2
    exit 2
fi
export BELABOX_FUZZ_EXAMPLES="$examples"
exec .venv/bin/python -m pytest -q -s -p no:cacheprovider --timeout=0 \
    --hypothesis-show-statistics tests/fault/test_receiver_fuzz_long.py
