"""Where the time of one training step goes, by operator: which part of the net to make cheaper next.

    python benchmarks/profile_step.py --widths 64 256 256 --batch 500 --steps 3 [--no-channels-last]
    python benchmarks/profile_step.py --batch 1000 --steps 3 --top 0 [--compile] [--bf16]   (the CPU levers)

Builds the fast net with the cifar10_fast optimizer set-up, runs warm-up steps on random data, then
profiles `--steps` steps with torch.profiler and prints the operators with the most self CPU time
and the share of forward, backward and optimizer time.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from imgcls.config import OptimConfig
from imgcls.device import cpu_info, tune_allocator
from imgcls.models import create_model
from imgcls.training.optim import build_optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", type=int, nargs=3, default=[64, 256, 256])
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--no-malloc", action="store_true", help="leave glibc's malloc as it is (runs tune it, as setup() does)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the net (inductor; compile time reported apart)")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (native only with AVX512_BF16 or AMX)")
    a = ap.parse_args()
    print(f"CPU: {cpu_info().describe()}; torch {torch.__version__}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if not a.no_malloc:
        tune_allocator()
    net = create_model("fastnet", num_classes=10, widths=a.widths)
    net.whiten.bias.requires_grad_(False)  # as after the first 3/8 of cifar10_fast
    opt = build_optimizer(net, OptimConfig(name="muon", lr=1.0, momentum=0.85, weight_decay_per_step=True,
                                           weight_decay=0.004, decay_norms=True))
    x, y = torch.randn(a.batch, 3, a.size, a.size), torch.randint(0, 10, (a.batch,))
    if not a.no_channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    model = torch.compile(net) if a.compile else net
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()

    def step() -> None:
        with record_function("forward"), cast:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.2)
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)

    t = time.perf_counter()
    for _ in range(2):
        step()
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    per_step = (time.perf_counter() - t) / a.steps
    print(f"widths {a.widths}, batch {a.batch}, {a.size}px, channels_last={not a.no_channels_last}, "
          f"malloc {'default' if a.no_malloc else 'tuned'}, compile={a.compile}, bf16={a.bf16}, "
          f"{torch.get_num_threads()} threads: {per_step:.3f} s/step = {per_step / a.batch * 50000:.0f} s per 50k images "
          f"(2 warm-up steps, compilation included: {warm:.1f} s)")
    if not a.top:
        return
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(a.steps):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.top))


if __name__ == "__main__":
    main()
