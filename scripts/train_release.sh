#!/usr/bin/env bash
# Train, choose, export and benchmark the model tpRNA ships (tprna/serve/model/) and write
# results/RELEASE.md, from ../shared/data (or --data DIR): set up the environment if
# needed, then scripts/train_release.py with any options given.  Resumable; about 8 h for
# every default candidate and both stages on a quiet 2-core CPU.  Runs are not kept in git:
# --from-record keeps the figures results/release/choice.json records for runs no longer on
# disk, so on a fresh clone it trains only what the record lacks (see the script's doc).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python scripts/train_release.py "$@"
