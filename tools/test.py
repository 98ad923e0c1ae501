"""Test (and evaluate) a model: the stock mmseg/mmdet ``tools/test.py``.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out OUT]
        [--show] [--show-dir DIR] [--cfg-options k=v ...] [--launcher none] [--tta]

Dispatches by the config's ``default_scope`` to the test script shipped in the
installed package, so every stock option works as documented there.
"""

import sys

from ailurus_mm.apis import run_stock_tool

if __name__ == '__main__':
    if not run_stock_tool('test'):
        sys.exit('usage: python tools/test.py CONFIG CHECKPOINT [stock mmseg/mmdet test options]')
