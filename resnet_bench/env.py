"""Provenance: what produced a result (git commit, library versions, hardware).

Every result record carries `environment()` so that a number can be traced
back to the code, the libraries and the machine that made it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from pathlib import Path

import torch

# Libraries whose versions change numbers or timings.
TRACKED_PACKAGES = ("torch", "torchvision", "numpy", "ray", "dvc", "pandas", "seaborn", "timm")


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The HEAD commit, with a `-dirty` suffix when tracked files differ; 'unknown' outside git."""
    cwd = Path(cwd or os.getcwd())
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def package_versions(names=TRACKED_PACKAGES) -> dict[str, str | None]:
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpuinfo_field(key: str) -> str | None:
    """The first `key` line of /proc/cpuinfo (Linux); None elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


@functools.cache
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (Linux), else platform.processor()."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def hardware(device: str | torch.device | None = None) -> dict:
    """The machine a measurement ran on: CPU, thread count and, on CUDA, the GPU."""
    hw = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu_name": None,
        "gpu_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }
    dev = torch.device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        hw["gpu_name"] = torch.cuda.get_device_name(dev)
    elif torch.cuda.is_available():
        hw["gpu_name"] = torch.cuda.get_device_name(0)
    return hw


def environment(device: str | torch.device | None = None, cwd=None, *, git: bool = False) -> dict:
    """Library versions and hardware; with `git`, the commit of `cwd` too.

    Cell records leave git out: the sweep driver captures it once in the repository
    (`git_info`, record["provenance"]["git"]), while a trial's working directory, often on
    another node, is not the repository and would say "unknown" (or another repo's commit).
    """
    out = {"versions": package_versions(), "hardware": hardware(device)}
    if git:
        out["git_commit"] = git_commit(cwd)
    return out


# ---- code fingerprint -------------------------------------------------------------------------

# The code that decides a cell's numbers, per module: the networks, the training and
# evaluation loop and schedule, the loader and augmentation, the numeric pin. Each entry
# names the top-level functions training calls; the fingerprint covers them and every
# top-level name of the same module they reference, transitively, plus every definition
# registered through a decorator they reference (the model registry). Recipe values are in
# the cell config and what `prepare` writes is in the data's content hash, so command-line
# and preparation code are left out: editing them retrains nothing.
# Names another module imports are roots of their own module (a test checks this for the
# models/ and data/ modules: tests/test_reproducible.py).
FINGERPRINT_ROOTS: dict[str, set[str]] = {
    "models/blocks.py": {"BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck", "Block", "PREACT_UNITS",
                         "conv3x3"},
    "models/trunk.py": {"ResNet"},
    "models/registry.py": {"build_model", "model_flops", "count_params"},
    "train.py": {"train_cell", "build_cell_model", "pin_numeric_environment"},
    # What train.py calls as `rt.<name>`: precision, determinism, the step, compilation, memory share, timing.
    "runtime.py": {"set_tf32", "set_determinism", "autocast", "grad_scaler", "train_step", "cpu_bf16_problem",
                   "Compiled", "synchronize", "apply_gpu_share", "resident_budget_bytes", "is_out_of_memory",
                   "first_line", "release_memory", "memory_where", "DoesNotFit", "DeviceTimer"},
    "data/artifact.py": {"load_prepared"},
    "data/loader.py": {"DeviceLoader", "shard_indices"},
    "data/augment.py": {"Augment", "crop_windows", "random_flip", "flip_mask", "plans", "oriented", "crop_resize",
                        "jitter_params", "color_jitter", "lighting_offsets", "store_problems", "to_device"},
    "env.py": {"pinned_env", "set_torch_numeric_flags"},
}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


def _top_level(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Top-level definitions by name (imports left out: what they bind is code elsewhere)."""
    out: dict[str, list[ast.AST]] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out.setdefault(n.id, []).append(node)
    return out


def _decorators(node: ast.AST) -> set[str]:
    return {n.id for d in getattr(node, "decorator_list", []) for n in ast.walk(d) if isinstance(n, ast.Name)}


def source_fingerprint(text: str, roots: set[str]) -> str:
    """SHA-256 of the syntax trees of `roots` and what they reach: no comments, docstrings or line numbers."""
    return hashlib.sha256("\n".join(fingerprinted_source(text, roots)).encode()).hexdigest()


def fingerprinted_source(text: str, roots: set[str]) -> list[str]:
    """The dumped syntax trees `source_fingerprint` hashes, in source order."""
    tree = _strip_docstrings(ast.parse(text))
    defs = _top_level(tree)
    chosen: set[str] = set()
    todo = [r for r in roots if r in defs]
    while todo:
        while todo:
            name = todo.pop()
            if name in chosen:
                continue
            chosen.add(name)
            for node in defs[name]:
                todo += [n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in defs]
        # Definitions registered through a decorator that reaches a chosen name (e.g. @_register,
        # which stores builders in the _MODELS that build_model reads), and that decorator.
        reaching = {d for d, nodes in defs.items()
                    if d in chosen or any(n.id in chosen for node in nodes for n in ast.walk(node)
                                          if isinstance(n, ast.Name))}
        todo = [name for name, nodes in defs.items() if name not in chosen
                and any(_decorators(n) & reaching for n in nodes)]
        todo += sorted({d for name in todo for n in defs[name] for d in _decorators(n) if d in defs})
    nodes = {id(n): n for name in sorted(chosen) for n in defs[name]}
    return [ast.dump(n, include_attributes=False) for n in sorted(nodes.values(), key=lambda n: n.lineno)]


@functools.cache
def code_fingerprint(package_dir: str | None = None) -> str:
    """16 hex digits over FINGERPRINT_ROOTS: a comment or CLI edit keeps it, a training-code edit changes it."""
    root = Path(package_dir) if package_dir else Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name, roots in sorted(FINGERPRINT_ROOTS.items()):
        fp = source_fingerprint((root / name).read_text(), roots)
        h.update(name.encode() + b"\0" + fp.encode() + b"\0")
    return h.hexdigest()[:16]


# ---- git provenance ---------------------------------------------------------------------------


def git_info(cwd: str | os.PathLike | None = None) -> dict:
    """Full HEAD commit, whether tracked files differ from it, and a hash of that diff."""
    cwd = Path(cwd or os.getcwd())

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        diff = git("diff", "HEAD", "--no-ext-diff", "--binary")
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None, "diff_sha256": None}
    return {"commit": commit, "dirty": bool(diff),
            "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else None}


def node_info() -> dict:
    """Where this process runs: hostname and, inside a Ray worker, the Ray node id and IP."""
    info = {"hostname": socket.gethostname(), "node_id": None, "ip": None}
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            info["node_id"] = ctx.get_node_id()
            info["ip"] = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - provenance must never fail a cell
        pass
    return info


# ---- numeric pin (deterministic CPU) ------------------------------------------------------------

# What decides fp32 CPU results besides code, data, the torch build and the thread count, per library
# the models' ops reach (evidence and tests: docs/reproducibility.md, "The numeric pin"):
# - ATen's own kernels (batch norm, pooling, ReLU, adds, log-softmax, SGD, im2col): one code path per
#   capability level, chosen once from ATEN_CPU_CAPABILITY at the first dispatch
#   (aten/src/ATen/native/DispatchStub.cpp); how they split work depends on the thread count only.
# - oneMKL: fp32 GEMM (linear layers; convolutions when oneDNN is off), its code branch fixed from
#   MKL_CBWR at its first call. Non-Intel CPUs support only the AUTO and COMPATIBLE branches: any
#   other (AVX2 included) silently runs AUTO there (oneMKL developer guide, "Getting Started with
#   Conditional Numerical Reproducibility"), so AMD and Intel ran different GEMM kernels under the
#   former MKL_CBWR=AVX2 pin. COMPATIBLE is one SSE2 path without the approximate rcpps/rsqrtps,
#   documented to give the same results on Intel and Intel-compatible CPUs.
# - oneDNN: fp32 convolutions while torch.backends.mkldnn is enabled. Deterministic "on a given
#   platform" only (oneDNN docs, "Primitive Attributes: deterministic"): its brgemm convolutions size
#   their blocking, hence their summation order, from the CPU's per-core cache sizes
#   (platform::get_per_core_cache_size); ONEDNN_MAX_CPU_ISA caps the ISA, not that.
# - NNPACK: the no-grad convolutions (batch >= 16) when oneDNN is off; it blocks by cache size too.
# Levels (runtime.numeric_pin):
# - "portable": oneDNN and NNPACK off, so convolutions are ATen im2col + MKL COMPATIBLE GEMM: the same
#   bits on every x86-64 CPU with AVX2, Intel or AMD, with or without AVX-512, whatever its caches
#   (tests/test_numeric_pin.py trains under an emulated Intel CPU), at a quarter to a half of the
#   training throughput with oneDNN (docs/benchmarks/numeric_pin.md). ONEDNN_MAX_CPU_ISA stays
#   pinned for any oneDNN primitive an op still reaches.
# - "host": the native ISA, oneDNN on, MKL in its AUTO reproducibility mode (fixed cache sizes,
#   deterministic reductions, static scheduling): the same bits run to run on one CPU model only.
# Both fix the thread count and turn off MKL's and OpenMP's dynamic thread adjustment (oneMKL
# "Reproducibility Conditions"). The environment variables must be set before the first tensor
# computation (each library reads its own once); the torch flags any time before training.
_NO_DYNAMIC_THREADS = {"MKL_DYNAMIC": "FALSE", "OMP_DYNAMIC": "FALSE"}
NUMERIC_PINS: dict[str, dict] = {
    "portable": {"env": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE",
                         **_NO_DYNAMIC_THREADS}, "onednn": False},
    "host": {"env": {"MKL_CBWR": "AUTO", **_NO_DYNAMIC_THREADS}, "onednn": True},
}
NUMERIC_ENV_VARS = (*dict.fromkeys(k for pin in NUMERIC_PINS.values() for k in pin["env"]),
                    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")


def pinned_env(threads: int | None, pin: str) -> dict[str, str]:
    """Environment variables a deterministic CPU process of pin level `pin` must start with."""
    env = dict(NUMERIC_PINS[pin]["env"])
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    return env


def set_torch_numeric_flags(pin: str | None) -> None:
    """The in-process part of pin level `pin` (None: torch's defaults): which convolution libraries run.

    NNPACK stays off under either level: with oneDNN on it is never reached, with oneDNN off it
    would take the no-grad convolutions.
    """
    torch.backends.mkldnn.enabled = True if pin is None else NUMERIC_PINS[pin]["onednn"]
    torch.backends.nnpack.set_flags(pin is None)


# oneMKL's CNR branch constants (mkl_cbwr_get's return values; oneMKL developer reference,
# "Named Constants for CNR Control").
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}


def mkl_cbwr_branch() -> str | None:
    """The oneMKL code branch in effect (mkl_cbwr_get(MKL_CBWR_BRANCH)); None without MKL.

    On an AMD CPU MKL_CBWR=AVX2 reads back AUTO. Call it after MKL has computed: its first call
    fixes the branch from MKL_CBWR as any MKL function does. torch links MKL statically; its build
    exports the call under MKL's internal name.
    """
    import ctypes

    try:
        lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:
        return None
    for name in ("mkl_cbwr_get", "mkl_serv_cbwr_get"):
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
            code = fn(1)  # MKL_CBWR_BRANCH
            return _MKL_BRANCHES.get(code, str(code))
    return None


def cpu_caches() -> dict[str, int]:
    """CPU 0's caches in KiB, one instance each (Linux sysfs: {"L1d": 48, "L1i": 32, "L2": 1024, ...})."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        if size.endswith("K") and size[:-1].isdigit():
            out[f"L{level}{suffix}"] = int(size[:-1])
    return out


def numeric_pin_in_effect(settings: dict) -> str | None:
    """The pin level whose every setting `settings` (numeric_environment's) shows in effect, else None."""
    for name, pin in NUMERIC_PINS.items():
        env = pin["env"]
        aten = env.get("ATEN_CPU_CAPABILITY")
        if (all(settings["env"].get(k) == v for k, v in env.items())
                and settings["mkl_cbwr_branch"] == env["MKL_CBWR"]
                and (aten is None or settings["aten_cpu_capability"] == aten.upper())
                and settings["onednn_enabled"] is pin["onednn"] and settings["nnpack_enabled"] is False):
            return name
    return None


# ---- numeric environment -------------------------------------------------------------------------


def _config_line(pattern: str) -> str | None:
    m = re.search(pattern, torch.__config__.show())
    return m.group(1).strip() if m else None


def numeric_environment(device: str | torch.device | None = None, *, amp: str | None = None) -> dict:
    """What decides floating-point results besides code and data: kernels, ISA, threads, flags.

    Read back from torch as it stands (call it after the run set its flags): float32 matmul and cuDNN
    convolution precision (`tf32` or `ieee`), the effective cuDNN determinism (its own flag or
    deterministic algorithms, either makes cuDNN pick deterministic kernels), autocast (`amp`, as
    the run used it) and, on CPU, the bf16 instructions. GPU fields name `device` (default: the
    current CUDA device).
    """
    from resnet_bench.runtime import AMP_DTYPES, cpu_bf16_isa

    cuda = torch.cuda.is_available()
    dev = torch.device(device) if device is not None else None
    gpu = dev if dev is not None and dev.type == "cuda" else (torch.device("cuda", torch.cuda.current_device())
                                                              if cuda else None)
    deterministic = torch.are_deterministic_algorithms_enabled()
    out = {
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn_version": _config_line(r"MKL-DNN (v[0-9.]+)") or _config_line(r"oneDNN (v[0-9.]+)"),
        "mkl_version": _config_line(r"Math Kernel Library Version ([^\n]+?) for"),
        "env": {k: os.environ.get(k) for k in NUMERIC_ENV_VARS},
        "mkl_cbwr_branch": mkl_cbwr_branch(),
        "onednn_enabled": torch.backends.mkldnn.enabled,
        "nnpack_enabled": torch._C._get_nnpack_enabled(),
        "cpu_vendor": _cpuinfo_field("vendor_id"),  # GenuineIntel, AuthenticAMD
        "cpu_caches_kib": cpu_caches(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "deterministic_algorithms": deterministic,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_deterministic_effective": bool(torch.backends.cudnn.deterministic or deterministic),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_fp32_precision": "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee",
        "conv_fp32_precision": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee",
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "autocast": str(AMP_DTYPES[amp]).removeprefix("torch.") if amp in AMP_DTYPES else None,
        "cpu_bf16_isa": cpu_bf16_isa(),
        "cuda_runtime": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "cublas_version": None,
        "gpu_name": torch.cuda.get_device_name(gpu) if gpu is not None else None,
        "gpu_compute_capability": ".".join(map(str, torch.cuda.get_device_capability(gpu))) if gpu is not None
        else None,
    }
    if cuda:
        out["cublas_version"] = _cublas_version()
    out["numeric_pin"] = numeric_pin_in_effect(out)
    out["pinned"] = out["numeric_pin"] is not None
    return out


def _cublas_version() -> str | None:
    """cuBLAS's own version (cublasGetProperty) from the library this process loaded, if any."""
    import ctypes

    try:
        path = next(line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines()
                    if "/libcublas.so" in line)
        lib, value, parts = ctypes.CDLL(path), ctypes.c_int(), []
        for prop in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL (library_types.h)
            if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
                return None
            parts.append(str(value.value))
        return ".".join(parts)
    except (OSError, StopIteration, AttributeError):
        return None  # not loaded yet (no matmul ran) or not on Linux
