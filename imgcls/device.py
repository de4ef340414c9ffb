"""Device choice, CPU threads and mixed precision: the only place that knows CUDA from CPU."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from imgcls.errors import ImgclsError


def select_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple MPS, then the CPU; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ImgclsError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ImgclsError(f"trainer.device={name} but CUDA is not available here; use trainer.device=auto or cpu")
    return dev


def cpu_count() -> int:
    """Cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(threads: int | None) -> int:
    """Set intra-op threads once at start-up (default: all cores this process may use)."""
    n = threads or cpu_count()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# glibc malloc: keep freed memory for the next step instead of returning it to the OS and faulting it
# back in (each training step frees and re-allocates the same large activation buffers). Measured
# on photo fine-tuning (docs/photos.md, 2 runs each): system time 71-79 -> 54 s, wall time 105-112 -> 94-97 s.
# Buffers above 32 MiB (glibc's highest mmap threshold) would still be fresh mmaps, faulted in on every
# step: M_MMAP_MAX=0 serves them from the heap too (MobileNetV2 at 224 px, batch 32: about 20 s of system
# time per 55 s of user time -> 1 s, 25 -> 37-40 images/s; docs/photos.md).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # mallopt parameter numbers (malloc.h)
MALLOC_SETTINGS = {M_MMAP_THRESHOLD: 32 * 2**20, M_TRIM_THRESHOLD: 2**30, M_TOP_PAD: 256 * 2**20, M_MMAP_MAX: 0}


def tune_allocator() -> bool:
    """Apply MALLOC_SETTINGS through glibc's mallopt (Linux with glibc only; elsewhere nothing). True if applied.

    Every buffer comes from the heap rather than a fresh mmap, and up to 1 GiB of freed heap is kept:
    no page faults per step for buffers a step frees and allocates again. Loader worker processes forked
    later inherit it. IMGCLS_MALLOC=0 leaves the allocator as it is; IMGCLS_MALLOC=mmap keeps buffers over
    32 MiB as mmaps (the setting before 2026-11-29, for comparisons: less peak memory, more system time).
    """
    import ctypes
    import ctypes.util
    import platform

    mode = os.environ.get("IMGCLS_MALLOC")
    if mode == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    settings = {k: v for k, v in MALLOC_SETTINGS.items() if not (mode == "mmap" and k == M_MMAP_MAX)}
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(libc.mallopt(k, v) == 1 for k, v in settings.items())
    except (OSError, AttributeError):
        return False


# CPU flags that decide speed here: AVX2-only machines run the same step 2-5x slower than AVX-512 ones,
# and bf16 arithmetic is native only with AVX512_BF16 or AMX (elsewhere it is emulated, many times slower).
SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as read at run time: model name, its SIMD flags and the kernel level torch dispatches to."""

    name: str
    flags: frozenset[str]
    capability: str  # torch.backends.cpu.get_cpu_capability(): DEFAULT, AVX2, AVX512 (ATEN_CPU_CAPABILITY lowers it)

    @property
    def native_bf16(self) -> bool:
        """bf16 runs natively: the flag is there and torch's kernels use AVX-512 (not lowered to AVX2)."""
        return bool(self.flags & {"avx512_bf16", "amx_bf16"}) and self.capability.startswith("AVX512")

    def describe(self) -> str:
        """E.g. "AMD EPYC (avx2, avx512f, avx512_bf16; torch kernels AVX512)"."""
        shown = [f for f in SIMD_FLAGS if f in self.flags]
        return f"{self.name} ({', '.join(shown) or 'no AVX2'}; torch kernels {self.capability})"


def cpu_info(cpuinfo: str | None = None) -> CpuInfo:
    """This machine's CPU, from /proc/cpuinfo (or the given text of one); flags empty where it is unreadable."""
    import platform

    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    name, flags = None, None
    for line in cpuinfo.splitlines():  # one block per logical CPU: the first block's values
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key == "flags" and flags is None:
            flags = frozenset(value.split())
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # pragma: no cover - older torch
        capability = "unknown"
    return CpuInfo(name=name or platform.processor() or "unknown CPU", flags=flags or frozenset(), capability=capability)


def amp_dtype(device: torch.device, amp: bool, cpu_bf16: bool = False) -> torch.dtype | None:
    """CUDA (with `amp`): bf16 when supported, else fp16. CPU: bf16 when `cpu_bf16` (decided by setup, which
    checks the CPU and measures), else None (fp32). MPS: fp32."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_bf16 else None
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; a disabled scaler is a no-op."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels only (torch raises for an op without one) and no cuDNN autotuning; off: autotuning on.

    cuDNN's autotuner picks the fastest convolution per shape (our batches keep one shape) but may
    pick differently from run to run, hence off when deterministic.

    cuBLAS needs CUBLAS_WORKSPACE_CONFIG before CUDA starts: it is set here when missing, which is in
    time unless this process has already used CUDA.
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.benchmark = not on
    torch.backends.cudnn.deterministic = on
