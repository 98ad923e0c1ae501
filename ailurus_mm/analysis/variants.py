"""Named AiluRus option sets on the command line: ``name:key=value,key=value``.

Values are parsed by mmengine's ``DictAction`` rules (ints, floats, bools,
None, strings), as ``--cfg-options`` values are.
"""

from __future__ import annotations

import argparse
import re
from typing import Dict, Tuple

__all__ = ['parse_variant', 'row_options']

# a comma that starts the next ``key=`` (values may hold commas, e.g. lists)
_SPLIT = re.compile(r',(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)')


def parse_variant(text: str) -> Tuple[str, Dict[str, object]]:
    """``'name:key=value,key=value'`` -> ``('name', {key: value})``.

    Raises:
        argparse.ArgumentTypeError: for text that is not of that form.
    """
    from mmengine.config import DictAction

    if ':' not in text:
        raise argparse.ArgumentTypeError(f'--variant {text!r}: expected name:key=value[,key=value]')
    name, body = text.split(':', 1)
    opts = {}
    for item in filter(None, _SPLIT.split(body)):
        if '=' not in item:
            raise argparse.ArgumentTypeError(f'--variant {text!r}: {item!r} is not key=value')
        key, value = item.split('=', 1)
        opts[key.strip()] = DictAction._parse_iterable(value.strip())
    return name, opts


def row_options(over: Dict[str, object]) -> Dict[str, object]:
    """A sweep row's full option set: the library defaults
    (``AiluRusOptions()``) plus what the row sets, so a row written once
    means the same whatever a config's default is (its later stages,
    reconstruction, ...)."""
    from ailurus_mm.ops import AiluRusOptions

    return dict(AiluRusOptions().to_dict(), **over)
