#!/usr/bin/env bash
# The paper's ablations on the real families in ../shared/data (or --data DIR), writing
# results/REPORT.md: set up the environment if needed, then scripts/reproduce.py with any
# options given (--epochs, --pretrain-epochs, --data, --only, --seeds …).  Resumable; about
# an hour on a quiet 2-core CPU at the default 12 epochs, two at --epochs 24.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
exec .venv/bin/python scripts/reproduce.py "$@"
