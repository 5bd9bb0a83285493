#!/usr/bin/env bash
# The Python of the pinned PyTorch reference (bench/requirements.txt), for the
# benchmarks and fixture generators. Never needed to build or test segc.
#
#   bash scripts/bench_env.sh [MODULE ...]   prints the interpreter's path
#   bash scripts/bench_env.sh --versions PY  prints the reference's versions as
#                                            one JSON object (added to every row)
#
# $SEGC_PYTHON, when set, is used as it is (an offline machine's own
# environment: its versions are printed in every row, so they show). Else
# .venv (git-ignored) is created with python3 -m venv and the pinned packages
# installed from PyPI the first time, and reused while bench/requirements.txt
# is unchanged (.venv/segc-pins holds the copy it was built from). Exits 1
# with the reason on stderr -- never a silent fallback to another Python --
# when the reference cannot be set up or lacks one of the MODULEs.
set -u
cd "$(dirname "$0")/.." || exit 1
req=bench/requirements.txt
if [ "${1:-}" = "--versions" ]; then
  exec "$2" - "$req" <<'PY'
import json, sys
from importlib import metadata
names = [l.split("==")[0].strip() for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
out = {"ref_python": sys.version.split()[0]}
for n in names:
    try:
        out["ref_" + n] = metadata.version(n)
    except metadata.PackageNotFoundError:
        out["ref_" + n] = None
print(json.dumps(out))
PY
fi
mods=${*:-torch}
imports=$(echo "$mods" | tr ' ' ',')
fail() { echo "bench_env: $*" >&2; exit 1; }
if [ -n "${SEGC_PYTHON:-}" ]; then
  "$SEGC_PYTHON" -c "import $imports" 2>/dev/null || fail "\$SEGC_PYTHON ($SEGC_PYTHON) cannot import $imports"
  echo "$SEGC_PYTHON"; exit 0
fi
if ! cmp -s "$req" .venv/segc-pins 2>/dev/null || ! .venv/bin/python -c "import $imports" 2>/dev/null; then
  echo "bench_env: installing the pinned PyTorch reference (bench/requirements.txt) into .venv from PyPI (once; several GB)" >&2
  command -v python3 >/dev/null || fail "no python3 on the PATH"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv >&2 || fail "python3 -m venv failed (Debian: apt-get install python3-venv, or bash scripts/deps.sh --bench)"
  fi
  rm -f .venv/segc-pins
  .venv/bin/python -m pip install -q --upgrade pip >&2 || fail "pip in .venv does not work"
  .venv/bin/python -m pip install -q -r "$req" >&2 || fail "pip could not install bench/requirements.txt (offline? set SEGC_PYTHON to a Python with them)"
  cp "$req" .venv/segc-pins
fi
.venv/bin/python -c "import $imports" 2>/dev/null || fail ".venv cannot import $imports after installing bench/requirements.txt"
echo "$PWD/.venv/bin/python"
