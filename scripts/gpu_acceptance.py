"""GPU acceptance run: every CUDA path of the suite once, on one GPU, in under 8 minutes; one JSON and a
Markdown summary. Run it from the repository root (pydantic and its dependencies as wheels in .whl/,
docs/benchmarks/gpu.md says how to fetch them):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site:$PWD python3 scripts/gpu_acceptance.py --out "$OUT"

Steps: TF32 set and read back; the bench step (ResNet-50 v1 at 224, bf16 + channels_last, the target
>= 3,000 img/s; fp16 with its loss scaler; compiled) with CUDA events and steady-state memory peaks;
the ten ImageNet-family models compiled in one process (dynamo's eager backend: tracing, no codegen);
a real out-of-memory and its halving under an allocator cap; a cell that does not fit its GPU share;
the fp16 loss scale across a checkpoint resume; the loader's and training step's host syncs per batch
(torch.cuda.set_sync_debug_mode); the training loop against the bench step on CIFAR ResNet-20 (target
>= 95 %); two trials sharing one GPU as two processes capped at half its memory each (Ray is not used:
it cannot be carried to those machines, so Ray's admission is not exercised, only the cap each trial
applies). Steps run most important first and are skipped, saying so, once the time budget is spent.

`--cpu` runs the same code paths on tiny sizes on the CPU (the test suite runs it): the CUDA-only
checks say why they are skipped, and the out-of-memory steps run in a child process whose address
space is capped (RLIMIT_AS), so the host allocator's refusals are real.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from resnet_bench import bench, train  # noqa: E402
from resnet_bench import config as cfg  # noqa: E402
from resnet_bench import runtime as rt  # noqa: E402
from resnet_bench.env import environment, numeric_environment  # noqa: E402
from resnet_bench.models import build_model  # noqa: E402

IMAGENET_MODELS = [f"resnet{d}_{v}" for d in (18, 34, 50, 101, 152) for v in ("v1", "v2")]
TARGET_R50_IMG_PER_S = 3000  # ResNet-50 v1 bf16 channels_last train step, one H100/H200
TARGET_LOOP_FRACTION = 0.95  # training loop / bench step img/s, CIFAR ResNet-20
DATASET = "synthetic_cifar"

# Sizes per mode: (train+val images, test images, side) of the synthetic dataset and the measurements.
SIZES = {
    "cuda": {"n_train": 50_000, "n_test": 10_000, "side": 32, "r50_batch": 256, "r50_img": 224, "warmup": 10,
             "repeats": 10, "steps": 5, "width": None, "loop_epochs": 3, "cells_epochs": 3,
             "ten_models": IMAGENET_MODELS, "ten_img": 64, "backend": "inductor", "bench_model": "resnet50_v1",
             "compile_model": "resnet50_v1"},
    "cpu": {"n_train": 640, "n_test": 160, "side": 8, "r50_batch": 4, "r50_img": 8, "warmup": 1,
            "repeats": 2, "steps": 1, "width": 4, "loop_epochs": 2, "cells_epochs": 1,
            "ten_models": ["resnet18_v1", "resnet18_v2"], "ten_img": 8, "backend": "eager",
            "bench_model": "resnet18_v1", "compile_model": "resnet18_v1"},
}


def write_dataset(root: Path, *, n_train: int, n_test: int, side: int) -> Path:
    """A prepared dataset of random CIFAR-shaped images (the loop's speed does not depend on content)."""
    from resnet_bench.data.artifact import _write_arrays, build_artifact, content_sha256

    out = root / DATASET
    rng = np.random.default_rng(0)
    make = lambda n: (rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8),  # noqa: E731
                      rng.integers(0, 10, n).astype(np.int64))
    arrays, meta = build_artifact(*make(n_train), *make(n_test), [str(i) for i in range(10)], val_fraction=0.1,
                                  split_seed=0)
    out.mkdir(parents=True, exist_ok=True)
    _write_arrays(out, arrays)
    meta.update({"name": DATASET, "format": "synthetic", "source": "numpy.random.default_rng(0)",
                 "source_sha256": None})
    meta["content_sha256"] = content_sha256(out, meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return root


def make_cell(prepared: Path, device: str, *, model="resnet20_v1", epochs=2, batch=128, amp=None, share=None,
              width=None, deterministic=None, compile_=False) -> cfg.Cell:
    runtime = {"device": device, "compile": compile_, **({"amp": amp} if amp else {}),
               **({} if deterministic is None else {"deterministic": deterministic})}
    layer = {"grid": {"models": [model], "datasets": [DATASET], "seeds": [0]},
             "arch": {"stem": "cifar", **({"width": width} if width else {})},
             "recipe": {"name": "quick", "epochs": epochs, "batch_size": batch, "augment": {"crop_pad": 4, "flip": True}},
             "runtime": runtime, "bench": {"warmup": 3},
             "resources": {"cpus_per_trial": 1, "gpus_per_trial": (share or 1) if device == "cuda" else 0}}
    exp = cfg.resolve_layers("gpu-acceptance", [cfg.Layer("gpu_acceptance.py", layer)], cfg.Params(),
                             check_datasets=False).experiment
    (cell,) = cfg.expand_grid(exp, data={DATASET: cfg.data_identity(prepared / DATASET)})
    return cell


def with_amp(cell: cfg.Cell, amp: str) -> cfg.Cell:
    """CPU mode runs fp16 through the same loss-scaler path (the schema keeps fp16 to CUDA)."""
    return cell.model_copy(update={"runtime": cell.runtime.model_copy(update={"amp": amp})})


def count_host_syncs(fn, device: torch.device) -> int:
    """Host syncs fn() causes: CUDA's sync debug mode warnings; on CPU the ops that would sync on CUDA."""
    if device.type == "cuda":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                fn()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)
    from torch.utils._python_dispatch import TorchDispatchMode

    count = [0]

    class Ops(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func)
            idx = args[1] if name.startswith("aten.index") and len(args) > 1 else []
            count[0] += ("nonzero" in name or "_local_scalar_dense" in name
                         or any(torch.is_tensor(i) and i.dtype == torch.bool for i in idx or []))
            return func(*args, **(kwargs or {}))

    with Ops():
        fn()
    return count[0]


# ---- steps -----------------------------------------------------------------------------------------------


def step_environment(ctx) -> dict:
    dev = ctx["device"]
    out = {"environment": environment(dev), "numeric": numeric_environment(dev)}
    if dev.type == "cuda":
        n = torch.cuda.device_count()
        args = bench.parse_args(["--models", "resnet18_v1", "--device", f"cuda:{n}"])
        out["cuda_index_refused"] = bench.check_args(args)  # one line: this machine has n GPU(s)
        assert len(out["cuda_index_refused"]) == 1, out["cuda_index_refused"]
    return out


def step_tf32(ctx) -> dict:
    dev = ctx["device"]
    if dev.type != "cuda":
        return {"skipped": "needs CUDA: TF32 is a GPU tensor-core format"}
    a, b = (torch.randn(4096, 4096, device=dev) for _ in range(2))
    exact = (a.double() @ b.double())
    out = {}
    for tf32 in (False, True):
        rt.set_tf32(tf32)
        rel = ((a @ b).double() - exact).abs().max().item() / exact.abs().max().item()
        num = numeric_environment(dev)
        out[f"tf32_{tf32}"] = {"max_rel_error": rel, "matmul": num["matmul_fp32_precision"],
                               "conv": num["conv_fp32_precision"]}
    rt.set_tf32(False)
    assert out["tf32_True"]["max_rel_error"] > 10 * out["tf32_False"]["max_rel_error"], out
    return out


def _bench(ctx, model: str, *, amp: str, compile_=False, batch=None, img=None, num_classes=1000, stem="imagenet",
           backend=None, warmup=None, repeats=None, steps=None) -> dict:
    s, dev = ctx["sizes"], ctx["device"]
    width = s["width"]
    t0 = time.perf_counter()
    rec = bench.benchmark_model(
        lambda: build_model(model, num_classes=num_classes, stem=stem, **({"width": width} if width else {})),
        batch_size=batch or s["r50_batch"], img_size=img or s["r50_img"], num_classes=num_classes, device=dev,
        amp=amp, channels_last=True, compile=compile_, compile_backend=backend or s["backend"],
        warmup=warmup or s["warmup"], repeats=repeats or s["repeats"], steps_per_repeat=steps or s["steps"],
        label=model)
    keys = ("batch_size", "amp", "grad_scaler", "compile", "compile_backend", "compile_graphs", "compile_s",
            "train_img_per_s", "train_img_per_s_iqr", "infer_img_per_s", "train_step_ms_median",
            "achieved_tflop_per_s", "peak_mem_bytes", "first_step_peak_mem_bytes", "steady_allocated_bytes",
            "saved_activation_bytes", "saved_param_copy_bytes", "oom_retries", "oom_errors", "warmup_steps")
    return {"model": model, **{k: rec.get(k) for k in keys}, "wall_s": time.perf_counter() - t0}


def step_bench_resnet50(ctx) -> dict:
    dev = ctx["device"]
    amps = ["bf16", "fp16"] if dev.type == "cuda" else ["none"]
    rows = [_bench(ctx, ctx["sizes"]["bench_model"], amp=amp) for amp in amps]
    out = {"rows": rows}
    if dev.type == "cuda":
        # CUDA events against the wall clock over the same 20 steps: the events time the device.
        out["events_vs_wall"] = _events_vs_wall(dev)
        out["target_img_per_s"] = TARGET_R50_IMG_PER_S
        out["meets_target"] = rows[0]["train_img_per_s"] >= TARGET_R50_IMG_PER_S
    return out


def _events_vs_wall(dev) -> dict:
    model = build_model("resnet50_v1", num_classes=1000).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = rt.grad_scaler(dev, "bf16")
    x = torch.randn(128, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (128,), device=dev)
    for _ in range(5):
        rt.train_step(model, opt, scaler, x, y, device=dev, amp="bf16")
    rt.synchronize(dev)
    timer, t0 = rt.DeviceTimer(dev), time.perf_counter()
    timer.start()
    for _ in range(20):
        rt.train_step(model, opt, scaler, x, y, device=dev, amp="bf16")
    timer.stop()
    rt.synchronize(dev)
    wall = time.perf_counter() - t0
    return {"events_s": timer.seconds(), "wall_s": wall, "ratio": timer.seconds() / wall}


def step_compile_resnet50(ctx) -> dict:
    row = _bench(ctx, ctx["sizes"]["compile_model"], amp="bf16" if ctx["device"].type == "cuda" else "none",
                 compile_=True)
    assert row["compile_graphs"] >= 2, row  # the train step and inference, each compiled
    return {"rows": [row]}


def step_ten_models_compile(ctx) -> dict:
    """All ten ImageNet-family models in one process, compiled (dynamo's eager backend: the recompile limit
    is dynamo's, whatever the backend), each with its own graphs."""
    s, dev = ctx["sizes"], ctx["device"]
    amp = "bf16" if dev.type == "cuda" else "none"
    rows = [_bench(ctx, m, amp=amp, compile_=True, batch=8, img=s["ten_img"], backend="eager", warmup=1, repeats=2,
                   steps=1) for m in s["ten_models"]]
    bad = [r["model"] for r in rows if r["compile_graphs"] < 2]
    assert not bad, f"compiled rows without their graphs: {bad}"
    return {"rows": [{k: r[k] for k in ("model", "compile_graphs", "compile_s", "train_img_per_s")} for r in rows]}


def step_oom(ctx) -> dict:
    dev = ctx["device"]
    if dev.type != "cuda":  # started with the run (runs beside the other steps), its result collected here
        return _collect_worker(ctx["oom_worker"], timeout=240)
    torch.cuda.empty_cache()
    fraction = 0.04  # about 5.6 GiB of an H200: ResNet-50 bf16 at 224 fits at batch 128, not at 2048
    torch.cuda.set_per_process_memory_fraction(fraction, dev)
    try:
        halved = _bench(ctx, "resnet50_v1", amp="bf16", batch=2048, warmup=2, repeats=2, steps=1)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, dev)
        torch.cuda.empty_cache()
    assert halved["oom_retries"] >= 1, halved
    # A cell that does not fit its share (2 % of the GPU): one line naming model, batch, GPU and memory.
    cell = make_cell(ctx["prepared"], "cuda", model="resnet18_v1", width=256, batch=2048, epochs=1, share=0.02)
    line = _does_not_fit(cell, ctx["prepared"])
    torch.cuda.set_per_process_memory_fraction(1.0, dev)
    torch.cuda.empty_cache()
    return {"bench_halving": halved, "cell_does_not_fit": line}


def _does_not_fit(cell: cfg.Cell, prepared: Path, backend: str = "inductor") -> str:
    try:
        train.train_cell(cell, prepared, compile_backend=backend)
    except rt.DoesNotFit as err:
        line = str(err)
        assert "\n" not in line and line.startswith(f"{cell.model} at batch {cell.recipe.batch_size} does not fit"), line
        return line
    raise AssertionError(f"{cell.model} at batch {cell.recipe.batch_size} trained within its cap")


def step_fp16_resume(ctx) -> dict:
    """fp16, deterministic: an uninterrupted run and one killed after epoch 1's checkpoint then resumed
    agree, loss scale included."""
    dev, prepared, s = ctx["device"], ctx["prepared"], ctx["sizes"]
    base = make_cell(prepared, dev.type, epochs=2, width=s["width"], deterministic=True,
                     amp="fp16" if dev.type == "cuda" else None)
    cell = base if dev.type == "cuda" else with_amp(base, "fp16")
    full = train.train_cell(cell, prepared)

    class Stop(Exception):
        pass

    def stop(path, rec):
        raise Stop

    ckpt = ctx["work"] / "fp16.pt"
    with contextlib.suppress(Stop):
        train.train_cell(cell, prepared, checkpoint_path=ckpt, on_checkpoint=stop)
    scale_at_1 = torch.load(ckpt, weights_only=False)["scaler"]["scale"]
    resumed = train.train_cell(cell, prepared, checkpoint_path=ckpt)
    same = all(full["metrics"][k] == resumed["metrics"][k] for k in ("test_acc", "test_loss", "final_train_loss"))
    out = {"scale_after_epoch_1": scale_at_1, "scale_final": full["metrics"]["amp_grad_scale"],
           "scale_final_resumed": resumed["metrics"]["amp_grad_scale"], "identical_metrics": same,
           "test_acc": [full["metrics"]["test_acc"], resumed["metrics"]["test_acc"]]}
    assert out["scale_final"] == out["scale_final_resumed"] and same, out
    return out


def step_host_syncs(ctx) -> dict:
    """Syncs per batch of the loader alone, and of the training step (bf16, and fp16 whose GradScaler
    reads its overflow flag on the host once per step)."""
    dev, prepared, s = ctx["device"], ctx["prepared"], ctx["sizes"]
    cell = make_cell(prepared, dev.type, epochs=1, width=s["width"])
    loader = train._loaders(cell, prepared, dev)[0]
    loader.set_epoch(1)
    batches = min(50, len(loader) - 1)

    def load():
        for i, _ in enumerate(loader):
            if i + 1 == batches:
                break

    out = {"loader_syncs_per_batch": count_host_syncs(load, dev) / batches}
    for amp in (["bf16", "fp16"] if dev.type == "cuda" else ["none"]):
        model = train.build_cell_model(cell, 10, 3).to(dev).to(memory_format=torch.channels_last)
        opt, scaler = train.make_optimizer(model, cell.recipe), rt.grad_scaler(dev, amp)
        x, y = next(iter(loader))
        x = x.contiguous(memory_format=torch.channels_last)
        rt.train_step(model, opt, scaler, x, y, device=dev, amp=amp)  # first step: cuDNN, allocator
        steps = lambda: [rt.train_step(model, opt, scaler, x, y, device=dev, amp=amp) for _ in range(10)]  # noqa: E731
        out[f"train_step_syncs_per_step_{amp}"] = count_host_syncs(steps, dev) / 10
    assert out["loader_syncs_per_batch"] == 0, out
    return out


def step_loop_vs_bench(ctx) -> dict:
    dev, prepared, s = ctx["device"], ctx["prepared"], ctx["sizes"]
    cell = make_cell(prepared, dev.type, epochs=s["loop_epochs"], width=s["width"])
    rec = train.train_cell(cell, prepared)
    b = cell.bench
    row = bench.benchmark_model(lambda: train.build_cell_model(cell, 10, 3), batch_size=cell.recipe.batch_size,
                                img_size=s["side"], num_classes=10, device=dev, amp=cell.runtime.amp,
                                channels_last=cell.runtime.channels_last, warmup=max(b.warmup, s["warmup"]),
                                repeats=s["repeats"] * 2, steps_per_repeat=s["steps"] * 4, label=cell.model)
    loop, step = rec["metrics"]["train_img_per_s"], row["train_img_per_s"]
    out = {"model": cell.model, "amp": cell.runtime.amp, "channels_last": cell.runtime.channels_last,
           "batch_size": cell.recipe.batch_size, "loop_img_per_s": loop, "bench_img_per_s": step,
           "loop_fraction": loop / step, "epoch_img_per_s": [e["train_img_per_s"] for e in rec["epochs"]],
           "steady_img_per_s": [e["steady_train_img_per_s"] for e in rec["epochs"]]}
    if dev.type == "cuda":
        out["target_fraction"] = TARGET_LOOP_FRACTION
        out["meets_target"] = out["loop_fraction"] >= TARGET_LOOP_FRACTION
    return out


def step_sharing(ctx) -> dict:
    """Two trials on one GPU at gpus_per_trial 0.5, as two processes started together: each caps its
    allocator at half the GPU, finishes, stays under its cap, and cannot allocate past it."""
    dev, prepared, s = ctx["device"], ctx["prepared"], ctx["sizes"]
    cell = make_cell(prepared, dev.type, epochs=s["cells_epochs"], width=s["width"],
                     share=0.5 if dev.type == "cuda" else None)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks are not the trials' to compete with
    procs = []
    for i in range(2):
        path = ctx["work"] / f"share{i}.json"
        path.write_text(json.dumps(cell.to_dict()))
        procs.append(_start_worker(ctx, "train", "--cell", str(path), "--result", str(path.with_suffix(".out.json"))))
    results = [_collect_worker(p, timeout=300) for p in procs]
    for r in results:
        assert r["status"] == "ok", r
    starts, ends = [r["t_start"] for r in results], [r["t_end"] for r in results]
    out = {"gpu_share": cell.gpu_share, "ray": "not used: Ray cannot be carried to this machine; its fractional "
           "admission is not exercised, only the cap each trial applies",
           "overlap_s": min(ends) - max(starts), "trials": results}
    if dev.type == "cuda":
        for r in results:
            assert r["train_peak_mem_bytes"] <= r["gpu_memory_cap_bytes"] and r["cap_enforced"], r
    return out


# ---- child processes ----------------------------------------------------------------------------------------


def _start_worker(ctx, kind: str, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--prepared", str(ctx["prepared"]),
           "--backend", ctx["sizes"]["backend"], *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    if kind == "oom":  # glibc returns every block over 64 KiB to the OS on free, so a capped space refills;
        # one thread: OpenMP reserves each thread's stack in the capped address space
        env.update(MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    log = ctx["work"] / f"{kind}-{time.monotonic_ns()}.log"  # a file: a full pipe would block the child
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    return proc


def _collect_worker(proc: subprocess.Popen, timeout: int) -> dict:
    if proc.wait(timeout=timeout) != 0:
        raise RuntimeError(f"worker exited {proc.returncode}: {_last_line(proc)}")
    return json.loads(Path(proc.args[proc.args.index("--result") + 1]).read_text())


def _last_line(proc: subprocess.Popen) -> str:
    """The worker's error: its last line, with the frame that raised it when the log has a traceback."""
    lines = proc.log.read_text().strip().splitlines()
    frames = [line.strip() for line in lines if line.strip().startswith("File ")]
    return (lines[-1] + (f" (at {frames[-1]})" if frames else "")) if lines else ""


def worker_train(args) -> None:
    cell = cfg.Cell.model_validate(json.loads(Path(args.cell).read_text()))
    t_start = time.time()
    rec = train.train_cell(cell, args.prepared, compile_backend=args.backend)
    m = rec["metrics"]
    out = {"status": rec["status"], "t_start": t_start, "t_end": time.time(), "test_acc": m.get("test_acc"),
           "train_img_per_s": m["train_img_per_s"], "gpu_hours": m["gpu_hours"],
           "gpu_memory_cap_bytes": m["gpu_memory_cap_bytes"], "train_peak_mem_bytes": m["train_peak_mem_bytes"]}
    if cell.runtime.device == "cuda":
        try:  # the cap is the allocator's: a block as large as the cap itself must be refused
            torch.empty(m["gpu_memory_cap_bytes"], dtype=torch.uint8, device="cuda")
            out["cap_enforced"] = False
        except torch.OutOfMemoryError:
            out["cap_enforced"] = True
    Path(args.result).write_text(json.dumps(out))


def worker_oom(args) -> None:
    """CPU mode: the host allocator under a capped address space refuses for real (no OOM killer)."""
    import resource

    vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
    # 512 MiB more: room for what any CPU's libraries map on first use (MKL/OpenMP buffers, lazy imports),
    # while batch 1024 of ResNet-18 at 32 px (268 MB per first-stage activation) and the batch-512 cell
    # below (about 2.7 GB of activations) still cannot fit
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**29, resource.RLIM_INFINITY))
    # ATen's own convolutions: oneDNN reports a refused scratchpad as "could not create a primitive",
    # which says nothing about memory; the host allocator's refusal does.
    torch.backends.mkldnn.enabled = False
    prepared = Path(args.prepared)
    ctx = {"device": torch.device("cpu"), "sizes": SIZES["cpu"]}
    halved = _bench(ctx, "resnet18_v1", amp="none", batch=1024, img=32, num_classes=10, stem="cifar", warmup=1,
                    repeats=1, steps=1)
    assert halved["oom_retries"] >= 1, halved
    cell = make_cell(prepared, "cpu", model="resnet18_v1", width=64, batch=512, epochs=1)
    line = _does_not_fit(cell, prepared, backend="eager")
    Path(args.result).write_text(json.dumps({"bench_halving": halved, "cell_does_not_fit": line}))


# ---- the run --------------------------------------------------------------------------------------------------

# Most important first: a spent budget skips the tail, not the targets.
STEPS = [("environment", step_environment, 5), ("tf32", step_tf32, 10), ("bench_resnet50", step_bench_resnet50, 40),
         ("oom", step_oom, 40), ("fp16_resume", step_fp16_resume, 40), ("host_syncs", step_host_syncs, 15),
         ("loop_vs_bench", step_loop_vs_bench, 40), ("sharing", step_sharing, 60),
         ("ten_models_compile", step_ten_models_compile, 60), ("compile_resnet50", step_compile_resnet50, 150)]


def summary_line(name: str, res: dict) -> str:
    r = res.get("result") or {}
    if name == "bench_resnet50" and r.get("rows"):
        return "; ".join(f"{row['amp']}: {row['train_img_per_s']:,.0f} img/s, peak {row['peak_mem_bytes'] / 2**30:.2f} "
                         f"GiB (first step {(row['first_step_peak_mem_bytes'] or 0) / 2**30:.2f})" for row in r["rows"])
    if name == "loop_vs_bench" and "loop_fraction" in r:
        return (f"loop {r['loop_img_per_s']:,.0f} / bench {r['bench_img_per_s']:,.0f} img/s = "
                f"{100 * r['loop_fraction']:.1f} %")
    if name == "oom" and r:
        return f"halved {r['bench_halving']['oom_retries']}x to batch {r['bench_halving']['batch_size']}; " \
               f"cell: {r['cell_does_not_fit'][:120]}"
    if name in ("ten_models_compile", "compile_resnet50") and r.get("rows"):
        return ", ".join(f"{row['model']} {row['compile_graphs']} graphs {row['compile_s']:.1f} s" for row in r["rows"])
    if name == "fp16_resume" and r:
        return f"scale {r['scale_after_epoch_1']} after epoch 1, final {r['scale_final']} = resumed " \
               f"{r['scale_final_resumed']}; identical metrics {r['identical_metrics']}"
    if name == "host_syncs" and r:
        return ", ".join(f"{k} {v:g}" for k, v in r.items())
    if name == "sharing" and r:
        return (f"2 trials at share {r['gpu_share']}, overlapping {r['overlap_s']:.1f} s: "
                + ", ".join(f"{t['train_img_per_s'] or 0:,.0f} img/s" for t in r["trials"]))
    return res.get("skipped") or res.get("error") or ""


def markdown(report: dict) -> str:
    lines = [f"# GPU acceptance ({report['mode']})", "", f"`{report['command']}`", "",
             f"{report['device_name']}, torch {report['torch']}, {report['total_s']:.0f} s in all", "",
             "| step | status | s | figures |", "| --- | --- | ---: | --- |"]
    for name, res in report["steps"].items():
        lines.append(f"| {name} | {res['status']} | {res.get('seconds', 0):.1f} | "
                     f"{summary_line(name, res).replace('|', '/')} |")
    t = report["targets"]
    lines += ["", "Targets: " + "; ".join(f"{k}: {v}" for k, v in t.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="folder for gpu_acceptance.json and gpu_acceptance.md (required)")
    p.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (what the test suite runs)")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip the remaining steps past this (seconds)")
    p.add_argument("--steps", help="comma-separated subset of: " + ", ".join(n for n, _, _ in STEPS))
    p.add_argument("--worker", choices=["train", "oom"], help=argparse.SUPPRESS)
    p.add_argument("--prepared", help=argparse.SUPPRESS)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="inductor", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        {"train": worker_train, "oom": worker_oom}[args.worker](args)
        return 0
    if not args.out:
        p.error("the following arguments are required: --out")
    t0 = time.perf_counter()
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run with --cpu for the CPU mode", file=sys.stderr)
        return 2
    chosen = set(args.steps.split(",")) if args.steps else {n for n, _, _ in STEPS}
    unknown = chosen - {n for n, _, _ in STEPS}
    if unknown:
        print(f"error: --steps: unknown {', '.join(sorted(unknown))}; valid: "
              f"{', '.join(n for n, _, _ in STEPS)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    mode = "cpu" if args.cpu else "cuda"
    sizes = SIZES[mode]
    torch.manual_seed(0)
    # An indexed device: torch.cuda.set_per_process_memory_fraction refuses a bare "cuda".
    device = torch.device("cuda", torch.cuda.current_device()) if mode == "cuda" else torch.device("cpu")
    ctx = {"device": device, "sizes": sizes, "work": work,
           "prepared": write_dataset(work / "prepared", n_train=sizes["n_train"], n_test=sizes["n_test"],
                                     side=sizes["side"])}
    if mode == "cpu" and "oom" in chosen:
        ctx["oom_worker"] = _start_worker(ctx, "oom", "--result", str(work / "oom.out.json"))
    steps = {}
    for name, fn, estimate_s in STEPS:
        if name not in chosen:
            continue
        left = args.budget_s - (time.perf_counter() - t0)
        if left < estimate_s:
            steps[name] = {"status": "skipped", "skipped": f"time budget: {left:.0f} s left, the step takes "
                                                           f"about {estimate_s} s"}
            continue
        print(f"[acceptance] {name} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            result = fn(ctx)
            status = "skipped" if "skipped" in result else "ok"
            steps[name] = {"status": status, "result": result, **({"skipped": result["skipped"]}
                                                                  if status == "skipped" else {})}
        except Exception as err:  # recorded; the next steps still run
            steps[name] = {"status": "failed", "error": rt.first_line(err),
                           "traceback": traceback.format_exc(limit=-6)}
        steps[name]["seconds"] = time.perf_counter() - t
        print(f"[acceptance] {name}: {steps[name]['status']} ({steps[name]['seconds']:.1f} s) "
              f"{summary_line(name, steps[name])}", file=sys.stderr, flush=True)
    get = lambda step, key: (steps.get(step, {}).get("result") or {}).get(key)  # noqa: E731
    report = {
        "mode": mode, "command": " ".join([Path(sys.executable).name, "scripts/gpu_acceptance.py", *(argv or sys.argv[1:])]),
        "device_name": torch.cuda.get_device_name(0) if mode == "cuda" else "cpu", "torch": torch.__version__,
        "total_s": time.perf_counter() - t0, "steps": steps,
        "targets": {"resnet50_v1 bf16 channels_last >= 3000 img/s": get("bench_resnet50", "meets_target"),
                    "loop >= 95 % of bench (ResNet-20)": get("loop_vs_bench", "meets_target"),
                    "compile on every compiled row": all(steps.get(s, {}).get("status") == "ok"
                                                         for s in ("ten_models_compile", "compile_resnet50")
                                                         if s in chosen)},
    }
    (out / "gpu_acceptance.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "gpu_acceptance.md").write_text(md)
    print(md)
    return 1 if any(s["status"] == "failed" for s in steps.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
