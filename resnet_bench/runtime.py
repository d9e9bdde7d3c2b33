"""How a cell's computation runs on its device, shared by training and the bench: float32 precision
(TF32), determinism, autocast and fp16 loss scaling, compilation, the GPU share a trial holds,
out-of-memory classification, and device-side timing.

Training code: `env.FINGERPRINT_ROOTS` covers what `train.train_cell` calls here.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from pathlib import Path

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# ---- precision and determinism ----------------------------------------------------------------------


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for float32 matmuls (cuBLAS) and convolutions (cuDNN), both set explicitly.

    torch's own defaults differ (matmuls off, cuDNN convolutions on, torch 2.x), so a float32 GPU run
    leaves neither to the build. The legacy flags are used because torch 2.5 through 2.14 all honour
    them; `env.numeric_environment` reads the effective state back.
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic: deterministic algorithms, cuDNN deterministic and not autotuned. Otherwise
    cuDNN autotunes its convolution algorithms on CUDA (`cudnn.benchmark`), as GPU experiments do.

    cuBLAS needs CUBLAS_WORKSPACE_CONFIG before its first call to be deterministic (PyTorch
    "Reproducibility" notes). ResNet's 1x1 adaptive average pool runs as a mean (ATen), so no
    operation of these networks lacks a deterministic CUDA implementation.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def autocast(device: torch.device, amp: str):
    """Autocast to `amp` ('bf16' | 'fp16') on the device, or nothing for 'none'."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AMP_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """fp16 loss scaling (on for fp16 only; a disabled scaler passes everything through)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def train_step(model, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, x: torch.Tensor,
               y: torch.Tensor, *, device: torch.device, amp: str, label_smoothing: float = 0.0):
    """One optimiser step, the same in the training loop and the bench: (logits, loss), both on the device.

    Gradients are dropped before the forward (set to None), so the last step's are not held through
    it; the loss is computed in float32; fp16 scales the loss and skips a step whose gradients
    overflowed (GradScaler). Nothing here waits for the device (fp16's overflow check aside).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return logits, loss


# ---- CPU bf16 --------------------------------------------------------------------------------------


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86 / Arm
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_isa(flags: set[str] | None = None) -> str | None:
    """The instructions that make bf16 fast on this CPU: 'AMX-BF16', 'AVX512-BF16', Arm 'BF16', or None."""
    flags = _cpu_flags() if flags is None else flags
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("bf16", "BF16")):
        if flag in flags:
            return name
    return None


def cpu_bf16_problem(device_type: str, amp: str, flags: set[str] | None = None) -> str | None:
    """Why bf16 autocast cannot run fast here (one line), or None."""
    if device_type != "cpu" or amp != "bf16" or cpu_bf16_isa(flags):
        return None
    from resnet_bench.env import cpu_model

    return (f"runtime.amp 'bf16' on cpu: this CPU ({cpu_model()}) has neither AMX-BF16 nor AVX512-BF16 "
            "(nor Arm BF16), so bf16 would be emulated, slower than float32; valid here: amp none")


# ---- compilation ------------------------------------------------------------------------------------


def _graph_count() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


class Compiled:
    """A model as a step calls it: `torch.compile`d in a fresh dynamo state, or the model itself.

    Dynamo keeps at most `recompile_limit` (8) graphs per code object, and every ResNet shares
    `ResNet.forward`: without a reset, the fifth model (train + eval graphs) of a process silently
    runs eager. Each `Compiled` therefore starts from `torch.compiler.reset()`, and, where the torch
    build has it, `fail_on_recompile_limit_hit` turns a silent eager fallback into an error.
    Shapes are static (`dynamic=False`): a partial last batch compiles its own graph once rather
    than switching every later batch to a dynamic-shape graph.
    `graphs` counts the graphs dynamo produced since; `compile_s` adds the wall seconds of the calls
    made inside `timing()` that produced one (tracing, compiling and that call's own execution).
    """

    def __init__(self, model: torch.nn.Module, *, enabled: bool, mode: str = "default",
                 backend: str = "inductor"):
        self.model, self.enabled, self.mode, self.backend = model, enabled, mode, backend
        self.compile_s = 0.0
        self.fn = model
        self._first = 0
        self._strict = contextlib.nullcontext
        if enabled:
            import torch._dynamo

            torch.compiler.reset()
            if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):
                # Only around this model's calls (dynamo reads it when it compiles), not process-wide.
                self._strict = lambda: torch._dynamo.config.patch(fail_on_recompile_limit_hit=True)
            self._first = _graph_count()
            self.fn = torch.compile(model, mode=None if mode == "default" else mode, backend=backend,
                                    dynamic=False)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self._strict():
            return self.fn(x)

    @property
    def graphs(self) -> int:
        return _graph_count() - self._first if self.enabled else 0

    @contextlib.contextmanager
    def timing(self, device: torch.device):
        """Adds the wall time of the enclosed call to `compile_s` when it produced a graph."""
        if not self.enabled:
            yield
            return
        before, t0 = self.graphs, time.perf_counter()
        yield
        if self.graphs != before:
            synchronize(device)
            self.compile_s += time.perf_counter() - t0

    def check(self) -> None:
        """A compiled model that produced no graph ran eager: refuse to report it as compiled."""
        if self.enabled and self.graphs < 1:
            raise RuntimeError(f"torch.compile ({self.backend}, mode {self.mode}) produced no graph: the model "
                               "ran eager")

    def stats(self) -> dict:
        return {"enabled": self.enabled, "mode": self.mode if self.enabled else None,
                "backend": self.backend if self.enabled else None, "graphs": self.graphs,
                "compile_s": self.compile_s}


# ---- devices, the GPU share, out of memory ---------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def local_device_problem(text: str) -> str | None:
    """Why `cuda` / `cuda:N` names no GPU of this machine (one line), or None."""
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have == 0:
        return f"{text!r} but this machine has no CUDA GPU"
    index = torch.device(text).index
    if index is not None and index >= have:
        return f"{text!r} but this machine has {have} GPU(s): {', '.join(f'cuda:{i}' for i in range(have))}"
    return None


def apply_gpu_share(device: torch.device, share: float | None) -> int | None:
    """Cap this process's CUDA allocator at `share` of the GPU's memory; returns the cap in bytes.

    Ray's fractional GPUs (`gpus_per_trial: 0.5`) only admit two trials to one GPU; nothing keeps
    one from taking the other's memory. The caching allocator refuses allocations beyond the
    fraction (torch.cuda.set_per_process_memory_fraction). A whole GPU (share 1) resets any cap
    an earlier cell of a reused worker process left. None on CPU.
    """
    if device.type != "cuda" or share is None:
        return None
    fraction = min(1.0, float(share))
    # This one wants an index (torch.device("cuda") without one is refused), unlike the memory queries.
    torch.cuda.set_per_process_memory_fraction(fraction, torch.cuda.current_device() if device.index is None
                                               else device.index)
    return int(fraction * torch.cuda.get_device_properties(device).total_memory)


def resident_budget_bytes(device: torch.device, cap_bytes: int | None) -> int | None:
    """Bytes a dataset may keep on the device under a memory cap: half of what the cap leaves now.

    None without a cap (the loader's own default: half the device's free memory)."""
    if cap_bytes is None:
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return max(0, min(free, cap_bytes - torch.cuda.memory_reserved(device))) // 2


# Allocation failures that are not torch.OutOfMemoryError: cuDNN and cuBLAS report theirs as plain
# RuntimeErrors (e.g. "CUDNN_STATUS_ALLOC_FAILED", "CUBLAS_STATUS_ALLOC_FAILED when calling
# `cublasCreate(handle)`"), cudaMalloc outside the caching allocator as "CUDA error: out of memory",
# and the CPU allocator as "DefaultCPUAllocator: can't allocate memory".
OOM_MARKERS = ("out of memory", "STATUS_ALLOC_FAILED", "can't allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    # MemoryError: the host allocator refused a Python/NumPy buffer (CPU trials, or a capped address space)
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in OOM_MARKERS)


def first_line(err: BaseException, limit: int = 200) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def release_memory(device: torch.device) -> None:
    """Return cached blocks to the device. Call it after leaving the `except` block of an out-of-memory
    error: until then its traceback holds the failed attempt's frames and their tensors."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def memory_where(device: torch.device, cap_bytes: int | None = None) -> str:
    """Where memory ran out: the GPU with its total and free memory (and this process's cap), or the host."""
    gib = 2**30
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        cap = f", this process capped at {cap_bytes / gib:.1f} GiB" if cap_bytes else ""
        return (f"{torch.cuda.get_device_name(device)} ({device}: {total / gib:.1f} GiB, {free / gib:.1f} GiB "
                f"free{cap})")
    import resource

    import psutil

    mem = psutil.virtual_memory()
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    cap = f", address space capped at {limit / gib:.1f} GiB" if limit != resource.RLIM_INFINITY else ""
    return f"cpu ({mem.total / gib:.1f} GiB, {mem.available / gib:.1f} GiB available{cap})"


class DoesNotFit(RuntimeError):
    """A cell or measurement needs more memory than its device (or its share of one) has."""


# ---- timing -----------------------------------------------------------------------------------------


class DeviceTimer:
    """Seconds between `start()` and `stop()` as the device sees them: CUDA events on the current stream
    (the host may run ahead of the GPU; events time the GPU's work, idle gaps included), perf_counter
    on CPU (which computes synchronously). Read `seconds()` after the device is synchronised."""

    def __init__(self, device: torch.device):
        self.device = device
        self._cuda = device.type == "cuda"
        self._start = self._end = None

    def _mark(self):
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))  # this device's stream, not the current device's
            return event
        return time.perf_counter()

    def start(self) -> None:
        self._start = self._mark()

    def stop(self) -> None:
        self._end = self._mark()

    @property
    def started(self) -> bool:
        return self._start is not None

    def seconds(self) -> float | None:
        if self._start is None or self._end is None:
            return None
        if self._cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1000.0
        return self._end - self._start
