"""Argument checks shared by every option of the package: one message format.

Every error names the argument, its value and the allowed range, so that a
bad config value is recognisable in the traceback of a model build.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ['check_int', 'check_choice', 'check_bool', 'check_ratio']


def check_int(name: str, value, low: int, high: Optional[int] = None, hint: str = '') -> int:
    """Return ``value`` if it is an int (not a bool) in ``[low, high]``.

    Args:
        name (str): the argument's name as the user wrote it (e.g.
            ``'ailurus.cluster_after'``).
        value: the value to check.
        low (int): smallest allowed value.
        high (int, optional): largest allowed value; None: unbounded.
        hint (str): appended to the message, e.g. what the range means.

    Raises:
        ValueError: naming the argument, the value and the range.
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f'[{low}, {high}]' if high is not None else f'>= {low}'
        raise ValueError(
            f'{name}={value!r} is outside the allowed range: an int {rng}'
            + (f' ({hint})' if hint else '')
        )
    return value


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f'{name}={value!r} is not one of {tuple(choices)}')


def check_bool(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is True or False (not 0/1)."""
    if not isinstance(value, bool):
        raise ValueError(f'{name}={value!r} must be True or False')


def check_ratio(name: str, value) -> float:
    """Return ``value`` as a float if it is a number in ``(0, 1]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not 0 < value <= 1
    ):
        raise ValueError(f'{name}={value!r} is outside the allowed range (0, 1]')
    return float(value)
