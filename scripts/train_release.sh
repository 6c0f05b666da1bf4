#!/usr/bin/env bash
# Train, choose, export and benchmark the model tpRNA ships (tprna/serve/model/) and write
# results/RELEASE.md, from ../shared/data (or --data DIR): set up the environment if
# needed, then scripts/train_release.py with any options given.  Resumable; about 3 h for
# every default candidate on a quiet 2-core CPU, ~1 h for the shipped recipe alone
# (--candidates "cov+ss:0 cov+ss/more+homolog:0"; see the script's doc for the budget).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python scripts/train_release.py "$@"
