#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment with the real OpenMMLab
# stack, in the only order that works here, and verify that mmcv's compiled ops
# really are compiled.
#
#   bash tools/setup_env.sh            # creates ./.venv (override: VENV=/path)
#
# Idempotent: a second run checks every pin and installs nothing that is
# already there; the mmcv build (7-11 min on 2 cores) is never repeated while
# the venv holds a working mmcv==2.1.0, and pip's wheel cache keeps the built
# wheel for new venvs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
REQ="$ROOT/requirements"
STEP="start"
T0=$(date +%s)

say() { printf '[setup %4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
fail() { printf '[setup] FAILED at step "%s" (exit %s). See the output above for pip'\''s reason.\n' "$STEP" "$1" >&2; }
trap 'fail $?' ERR

pin() {  # pin NAME -> "NAME==X.Y.Z" from requirements/mminstall.txt
  local line
  line=$(grep -E "^$1==" "$REQ/mminstall.txt") || { echo "no pin for $1 in $REQ/mminstall.txt" >&2; return 1; }
  echo "$line"
}
have() {  # have "NAME==VER": true when exactly that version is installed in the venv
  local name=${1%%==*} ver=${1##*==}
  local got
  got=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/{print $2}')
  [[ "${got%%+*}" == "$ver" ]]  # 2.13.0+cpu satisfies torch==2.13.0
}
pipi() { "$PY" -m pip install --progress-bar off "$@"; }

STEP="python version"
"$PYTHON" - <<'EOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"Python 3.11 is required (torch==2.13.0 is a cp311 wheel here); found {sys.version.split()[0]}")
EOF

STEP="virtual environment"
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
else
  say "using existing virtual environment $VENV"
fi
PY="$VENV/bin/python"

STEP="torch"
TORCH=$(pin torch)
if have "$TORCH"; then say "$TORCH already installed"; else
  say "installing $TORCH (pinned: an unpinned torch would pull a multi-GB CUDA build)"
  pipi "$TORCH"
fi

STEP="build tools"
say "installing build tools for mmcv's compiled ops: $(grep -v '^#' "$REQ/build.txt" | xargs)"
pipi -q -r "$REQ/build.txt" "$TORCH"

STEP="mmengine"
MMENGINE=$(pin mmengine)
if have "$MMENGINE"; then say "$MMENGINE already installed"; else
  say "installing $MMENGINE"
  pipi "$MMENGINE" "$TORCH"
fi

STEP="mmcv (compiled ops)"
MMCV=$(pin mmcv)
ops_ok() {
  "$PY" - <<'EOF' 2>/dev/null
import torch
from mmcv.ops import nms
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
scores = torch.tensor([0.9, 0.8, 0.7])
dets, keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
EOF
}
if have "$MMCV" && ops_ok; then say "$MMCV already installed with compiled ops"; else
  say "installing $MMCV from source with compiled ops against the installed torch"
  say "  (a cold build takes 7-11 min on 2 cores; pip's wheel cache makes later installs fast)"
  # -g0 drops debug info: ~40% faster build, 1.4 MB wheel instead of 32 MB.
  MAX_JOBS="${MAX_JOBS:-2}" CFLAGS="${CFLAGS:--DNDEBUG -fwrapv -O3 -g0}" MMCV_WITH_OPS=1 \
    pipi --no-build-isolation "$MMCV" "$TORCH"
fi
STEP="verify mmcv ops"
if ! ops_ok; then
  echo "[setup] mmcv is installed but mmcv.ops does not work (the ops were not compiled)." >&2
  echo "[setup] Remove it (pip uninstall mmcv; pip cache remove mmcv) and re-run this script." >&2
  false
fi
say "mmcv.ops verified: nms ran on the compiled extension"

STEP="mmsegmentation, mmdet and the rest"
say "installing $(pin mmsegmentation) $(pin mmdet) and requirements/{runtime,tests,optional}.txt"
pipi -q "$TORCH" "$MMENGINE" "$MMCV" "$(pin mmsegmentation)" "$(pin mmdet)" \
  -r "$REQ/runtime.txt" -r "$REQ/tests.txt" -r "$REQ/optional.txt"

STEP="ailurus_mm (editable)"
say "installing ailurus_mm in editable mode"
pipi -q --no-build-isolation --no-deps -e "$ROOT"

STEP="final check"
"$PY" - <<'EOF'
import torch, mmcv, mmengine, mmseg, mmdet, ailurus_mm
print(f"[setup] OK: torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, "
      f"mmseg {mmseg.__version__}, mmdet {mmdet.__version__}, ailurus_mm {ailurus_mm.__version__}")
EOF
say "done in $(( $(date +%s) - T0 )) s; activate with: source ${VENV}/bin/activate"
