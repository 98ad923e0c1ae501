"""Entry points shared by the command-line tools under ``tools/``."""

from .launch import config_scope, run_stock_tool, stock_run_overrides, stock_tool_path
from .train import (
    CPUAutocastOptimWrapper,
    amp_overrides,
    distributed_overrides,
    init_cpu_process_group,
    prepare_run,
)

__all__ = [
    'config_scope',
    'run_stock_tool',
    'stock_run_overrides',
    'stock_tool_path',
    'CPUAutocastOptimWrapper',
    'amp_overrides',
    'distributed_overrides',
    'init_cpu_process_group',
    'prepare_run',
]
