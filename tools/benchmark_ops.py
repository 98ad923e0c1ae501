"""Cost of the AiluRus clustering step next to the ViT-L layers it saves.

Times cluster + merge + unfold for several token counts N (seeded random
features, C=1024 by default), for the spatial readings ('adjacent', 'dpc') and
the global N x N variant ('dpc_global'), next to one ViT-L encoder layer
(torch's fused TransformerEncoderLayer, 1024 dims, 16 heads) at N and at the
kept token count, all in one process. Peak memory is the extra resident memory
of the step (allocations live at once, from the profiler's memory events).

    python tools/benchmark_ops.py                    # markdown table
    python tools/benchmark_ops.py --sizes 1600 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from ailurus_mm.analysis.tables import markdown_table
from ailurus_mm.analysis.timing import machine_info, time_interleaved
from ailurus_mm.ops import cluster_tokens, merge_tokens, unfold_tokens


def grid_for(n: int):
    """The most square H x W grid with H * W == n."""
    h = int(math.isqrt(n))
    while n % h:
        h -= 1
    return h, n // h


def step(x, hw, keep, method):
    a = cluster_tokens(x, hw, keep, method=method)
    return unfold_tokens(merge_tokens(x, a), a)


def timeit(fn, warmup, iters):
    """Median seconds per call (the package's one timer)."""
    return time_interleaved({'fn': fn}, warmup, iters)['fn'].median


def peak_mib(fn):
    """Peak of the bytes allocated by ``fn`` over its run, from the profiler's
    allocation/free events in time order (CPU tensors have no allocator stats)."""
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2**20


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument('--sizes', type=int, nargs='+', default=[256, 1024, 1600, 4096, 16384])
    ap.add_argument('--channels', type=int, default=1024)
    ap.add_argument('--keep', type=float, default=0.4)
    ap.add_argument('--methods', nargs='+', default=['adjacent', 'dpc', 'dpc_global'])
    ap.add_argument(
        '--global-max-n',
        type=int,
        default=4096,
        help='skip dpc_global above this N (its N x N buffers need GBs)',
    )
    ap.add_argument(
        '--layers',
        type=int,
        default=22,
        help='layers that run on the kept tokens (ViT-L after layer 2: 22)',
    )
    ap.add_argument('--threads', type=int, default=torch.get_num_threads())
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--iters', type=int, default=5)
    ap.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    ap.add_argument('--json', help='also write the rows to this JSON file')
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    c = args.channels
    layer = torch.nn.TransformerEncoderLayer(
        c, 16, 4 * c, batch_first=True, norm_first=True, activation='gelu'
    ).eval()
    rows = []
    print(
        f'# warmup={args.warmup} iters={args.iters} (median) C={c} keep={args.keep} '
        f'{machine_info()}',
        file=sys.stderr,
    )
    with torch.no_grad():
        for n in args.sizes:
            hw = grid_for(n)
            kept = max(1, int(math.floor(args.keep * n + 0.5)))
            x = torch.randn(1, n, c, generator=torch.Generator().manual_seed(0))
            iters = args.iters if n <= 4096 else max(1, args.iters // 3)
            t_layer = timeit(lambda: layer(torch.randn(1, n + 1, c)), 1, iters)
            t_kept = timeit(lambda: layer(torch.randn(1, kept + 1, c)), 1, iters)
            for method in args.methods:
                if method == 'dpc_global' and n > args.global_max_n:
                    continue
                print(f'N={n} {method} ...', file=sys.stderr, flush=True)
                t = timeit(lambda: step(x, hw, args.keep, method), args.warmup, iters)
                mem = (
                    float('nan')
                    if args.no_memory
                    else peak_mib(lambda: step(x, hw, args.keep, method))
                )
                rows.append(
                    dict(
                        N=n,
                        grid=f'{hw[0]}x{hw[1]}',
                        method=method,
                        kept=kept,
                        step_ms=t * 1e3,
                        peak_mib=mem,
                        layer_ms=t_layer * 1e3,
                        layer_kept_ms=t_kept * 1e3,
                        share_of_kept_forward=t / (args.layers * t_kept),
                    )
                )
    print(
        markdown_table(
            rows,
            [
                ('N', 'N'),
                ('grid', 'grid'),
                ('method', 'method'),
                ('step_ms', 'cluster+merge+unfold ms', '.1f'),
                ('peak_mib', 'peak MiB', '.0f'),
                ('layer_ms', 'ViT-L layer ms @N', '.1f'),
                ('layer_kept_ms', f'@kept ({args.keep})', '.1f'),
                (
                    lambda r: 100 * r['share_of_kept_forward'],
                    f'step / {args.layers} layers @kept',
                    '.2f}%',
                ),
            ],
        )
    )
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(
                dict(threads=args.threads, warmup=args.warmup, iters=args.iters, rows=rows),
                f,
                indent=1,
            )


if __name__ == '__main__':
    main()
