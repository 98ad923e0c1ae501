"""The one timer: warm-up, interleaved repetitions, median and spread.

Every speed number of the package comes from :func:`time_interleaved`: the
candidates (e.g. the stock model, the fused-kernel control and AiluRus) run
in turn inside each repetition, so slow drifts of a shared machine hit all of
them alike, and the median and the spread (min..max) over the repetitions
are reported. CUDA work is synchronised before each clock read.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional

import torch

__all__ = ['Timing', 'time_interleaved', 'machine_info', 'resolve_device']


@dataclass
class Timing:
    """Seconds per call of one candidate over the repetitions."""

    times: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median."""
        return (self.max - self.min) / self.median

    def ratio_to(self, other: 'Timing') -> Dict[str, float]:
        """Speed-up of ``self`` over ``other`` (other / self): median and the
        min..max range of the per-repetition ratios."""
        ratios = [o / s for o, s in zip(other.times, self.times)]
        return dict(median=other.median / self.median, min=min(ratios), max=max(ratios))


def resolve_device(device: Optional[str]) -> torch.device:
    """``'cpu'``, ``'cuda'``, ``'cuda:1'``; None picks cuda when available.

    Raises:
        ValueError: for an unknown or unavailable device.
    """
    if device is None:
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f'--device={device!r} is not a torch device: {e}') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise ValueError(f'--device={device!r}: CUDA is not available on this machine')
    if dev.type not in ('cpu', 'cuda'):
        raise ValueError(f'--device={device!r}: only cpu and cuda are supported')
    return dev


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    warmup: int = 1,
    repeats: int = 5,
    device: Optional[torch.device] = None,
    progress=None,
) -> Dict[str, Timing]:
    """Time several candidates in interleaved repetitions, without gradient.

    Args:
        fns (Mapping[str, callable]): name -> zero-argument callable.
        warmup (int): untimed calls of each candidate first (>= 0).
        repeats (int): timed repetitions; each calls every candidate once, in
            order (>= 1).
        device (torch.device, optional): synchronised before reading the
            clock when it is a CUDA device.
        progress: optional object with ``update(n)`` (e.g. a ProgressBar).

    Returns:
        dict[str, Timing]: per candidate, seconds per call.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f'warmup={warmup} must be >= 0 and repeats={repeats} >= 1')
    device = device or torch.device('cpu')
    times = {name: [] for name in fns}
    with torch.no_grad():
        for _ in range(warmup):
            for fn in fns.values():
                fn()
                if progress is not None:
                    progress.update(1)
        for _ in range(repeats):
            for name, fn in fns.items():
                _sync(device)
                t = time.perf_counter()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
                if progress is not None:
                    progress.update(1)
    return {name: Timing(ts) for name, ts in times.items()}


def machine_info(device: Optional[torch.device] = None) -> Dict[str, object]:
    """What a timing depends on: device, threads, load, versions."""
    device = device or torch.device('cpu')
    info = dict(
        device=str(device),
        threads=torch.get_num_threads(),
        cpus=os.cpu_count(),
        load_1min=round(os.getloadavg()[0], 2),
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
    )
    if device.type == 'cuda':
        info['gpu'] = torch.cuda.get_device_name(device)
    return info
