"""How fast can this machine go? fp32 matmul and the fast net's conv layers, in GFLOPS.

    python benchmarks/cpu_peak.py [--threads 2] [--batch 500]

A recipe's wall time is (FLOPs per image) x (images) / (sustained FLOP/s): this script measures the
last factor, so a time measured on one machine can be compared with a time measured on another, and
it counts the FLOPs of one training epoch of `fastnet` at the widths given (forward, plus twice that
for the backward's input and weight gradients; the whitening conv is frozen and gets no backward).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def timeit(fn, repeat: int = 3) -> float:
    fn()  # warm-up: kernel selection and first-touch allocation
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t) / repeat


def conv_layers(widths: list[int]) -> list[tuple[int, int, int]]:
    """(in, out, output side) of fastnet's 3x3 convs on 32x32 input (after the 2x2 whitening conv: 31x31)."""
    layers, cin, side = [], 24, 31
    for w in widths:
        layers.append((cin, w, side))  # conv1 at the block's input size, then maxpool 2
        side //= 2
        layers.append((w, w, side))  # conv2 after the pool
        cin = w
    return layers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--widths", type=int, nargs=3, default=[64, 256, 256])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    m = torch.randn(2048, 2048)
    dt = timeit(lambda: m @ m, repeat=10)
    print(f"fp32 matmul 2048^3: {2 * 2048 ** 3 / dt / 1e9:.0f} GFLOPS")
    epoch_flops = 0.0
    for cin, cout, side in conv_layers(a.widths):
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(a.batch, cin, side, side).contiguous(memory_format=torch.channels_last).requires_grad_()
        flops = 2 * a.batch * cin * 9 * cout * side * side  # forward multiply-adds x 2
        fwd = timeit(lambda conv=conv, x=x: conv(x))
        y = conv(x)
        g = torch.ones_like(y)
        both = timeit(lambda conv=conv, x=x, g=g: conv(x).backward(g))
        epoch_flops += 3 * flops / a.batch * 50_000
        print(f"conv {cin:>3}->{cout:<3} at {side:>2}x{side:<2}: forward {flops / fwd / 1e9:.0f} GFLOPS, "
              f"backward {2 * flops / max(both - fwd, 1e-9) / 1e9:.0f} GFLOPS")
    print(f"fastnet widths {a.widths}: {epoch_flops / 1e12:.1f} TFLOP of conv work per 50,000-image training epoch")


if __name__ == "__main__":
    main()
