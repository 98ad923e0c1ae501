#!/usr/bin/env bash
# Multi-process training, the OpenMMLab form:
#   bash tools/dist_train.sh CONFIG NPROC [tools/train.py options]
# = torchrun --nproc_per_node=NPROC tools/train.py CONFIG --launcher pytorch ...
# GPUs: one process per GPU, nccl. No CUDA: NPROC CPU processes, gloo (chosen by
# tools/train.py). Several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT as in mmseg.
# A rank that fails ends the job (torchrun stops the others; --max-restarts 0);
# collectives time out after env_cfg.dist_cfg.timeout seconds (default 1800).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: bash $0 CONFIG NPROC [tools/train.py options]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
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
    "$(dirname "$0")/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
