"""Measuring models: one timer, one table writer, FLOPs, twins, evaluation.

===================  ==========================================================
module               owns
===================  ==========================================================
``timing``           :func:`time_interleaved` (warm-up, interleaved repetitions,
                     median, spread, CUDA sync), :func:`machine_info`
``tables``           :func:`write_table`: markdown + CSV from the same rows
``flops``            :func:`count_flops` (mmengine's FlopAnalyzer + fused SDPA)
``models``           stock/AiluRus twins with identical weights, input images
``segmentation``     test batches and mIoU through mmseg's ``IoUMetric``
``variants``         ``name:key=value`` option sets on the command line
===================  ==========================================================
"""

from .flops import count_flops, sdpa_flop_jit
from .models import (
    ailurus_backbone,
    build_twins,
    load_images,
    quiet_logs,
    random_images,
    stock_config,
    token_counts,
)
from .tables import markdown_table, write_table
from .timing import Timing, machine_info, resolve_device, time_interleaved
from .variants import parse_variant

__all__ = [
    'count_flops',
    'sdpa_flop_jit',
    'ailurus_backbone',
    'build_twins',
    'load_images',
    'quiet_logs',
    'random_images',
    'stock_config',
    'token_counts',
    'markdown_table',
    'write_table',
    'Timing',
    'machine_info',
    'resolve_device',
    'time_interleaved',
    'parse_variant',
]
