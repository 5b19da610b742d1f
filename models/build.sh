#!/usr/bin/env bash
# Rebuild every model family under models/ from scratch, with fixed seeds, and verify them.
#   bash models/build.sh                 # all families
#   bash models/build.sh digits          # one family
# Makes models/.venv on first use (Python 3.11; torch 2.5.1 supports 3.9-3.12).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0
exec "$venv/bin/python" "$here/pipeline/build_all.py" "$@"
