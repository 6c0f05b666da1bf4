#!/usr/bin/env bash
# Train, choose, export and benchmark the model tpRNA ships (tprna/serve/model/) and write
# results/RELEASE.md, from ../shared/data (or --data DIR): set up the environment if
# needed, then scripts/train_release.py with any options given.  Resumable; about 5 h for
# every default candidate and the feature-set stage on a quiet 2-core CPU, ~2 h for the
# shipped recipe and the stage (--candidates "cov+ss+profile/depth:0"; see the script's doc).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python scripts/train_release.py "$@"
