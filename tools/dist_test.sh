#!/usr/bin/env bash
# Multi-process testing, the OpenMMLab form:
#   bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [tools/test.py options]
# = torchrun --nproc_per_node=NPROC tools/test.py CONFIG CHECKPOINT --launcher pytorch ...
# GPUs: one process per GPU, nccl. No CUDA: NPROC CPU processes, gloo (chosen by
# tools/test.py). Several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT as in mmseg.
# A rank that fails ends the job (torchrun stops the others; --max-restarts 0);
# collectives time out after env_cfg.dist_cfg.timeout seconds (default 1800).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash $0 CONFIG CHECKPOINT NPROC [tools/test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --master_port="$PORT" \
    --nproc_per_node="$NPROC" \
    --max-restarts=0 \
    "$(dirname "$0")/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
