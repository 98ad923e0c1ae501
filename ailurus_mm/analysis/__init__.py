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
``assignment_stats`` cluster-size histograms (Fig. A-1 y1/y2), boundary and
                     per-class cluster statistics
===================  ==========================================================
"""

from .assignment_stats import (
    boundary_counts,
    class_cluster_counts,
    pixel_token_index,
    size_distribution,
    size_histogram,
    size_summary,
    token_label_histogram,
)
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
from .variants import parse_variant, row_options

__all__ = [
    'size_histogram',
    'size_distribution',
    'size_summary',
    'pixel_token_index',
    'token_label_histogram',
    'boundary_counts',
    'class_cluster_counts',
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
    'row_options',
]
