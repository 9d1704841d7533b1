#!/usr/bin/env bash
# The README's test command: install the package with its test extras, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e ".[test]"
# The integration tests run one-thread nnU-Net processes, so the tests run on one pytest-xdist
# worker per CPU core (at most 4); each test module stays on one worker, so a module's fixtures
# are built once. Pass `-n 0` to run them in this process, one after the other.
python3 -m pytest -ra --durations=15 -n auto --maxprocesses 4 --dist loadscope "$@"
