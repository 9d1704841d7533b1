#!/usr/bin/env bash
# The README's test command: install the package with its test extras, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
python3 -m pytest -ra --durations=15 "$@"
