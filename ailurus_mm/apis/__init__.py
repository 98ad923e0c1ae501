"""Entry points shared by the command-line tools under ``tools/``."""

from .launch import config_scope, run_stock_tool, stock_tool_path

__all__ = ['config_scope', 'run_stock_tool', 'stock_tool_path']
