"""GPU paths of the sweep a CPU can show: the GPU share in cells, records and tables; slots and the ETA by
share; the bench pass one at a time; TF32 state compared by verify; out-of-memory classification."""

import pytest
import torch

from resnet_bench import collect
from resnet_bench import config as cfg
from resnet_bench import runtime as rt
from resnet_bench import verify
from resnet_bench.sweep import phases
from resnet_bench.sweep.progress import trial_slots

from test_collect import CODE_FP, make_record


def gpu_experiment(gpus_per_trial: float) -> cfg.Experiment:
    layer = cfg.Layer("test", {"grid": {"versions": ["v1", "v2"], "depths": [18], "datasets": ["digits"],
                                        "seeds": [0]},
                               "arch": {"width": 4}, "recipe": {"name": "quick", "epochs": 1},
                               "resources": {"cpus_per_trial": 2, "gpus_per_trial": gpus_per_trial}})
    return cfg.resolve_layers("t", [layer], cfg.Params(), check_datasets=False).experiment


def test_the_gpu_share_is_in_each_cell_its_id_and_the_cells_table():
    half = cfg.expand_grid(gpu_experiment(0.5), code_fingerprint=CODE_FP)
    whole = cfg.expand_grid(gpu_experiment(1), code_fingerprint=CODE_FP)
    assert {c.gpu_share for c in half} == {0.5} and {c.gpu_share for c in whole} == {1.0}
    assert {c.runtime.device for c in half} == {"cuda"}
    # a half-GPU cell's loop throughput is not a whole GPU's: another cell, another id
    assert {c.cell_id for c in half}.isdisjoint(c.cell_id for c in whole)
    cpu = cfg.expand_grid(gpu_experiment(0))
    assert {c.gpu_share for c in cpu} == {None}
    records = []
    for cell in half:
        rec = make_record(cell.to_dict(), acc=0.9)
        rec["metrics"].update(train_time_s=7200.0, gpu_hours=7200.0 / 3600 * cell.gpu_share)
        records.append(rec)
    table = collect.cells_table(records)
    assert list(table["gpu_share"]) == [0.5, 0.5] and list(table["gpu_hours"]) == [1.0, 1.0]
    assert list(table["tf32"]) == [False, False] and list(table["compile_mode"]) == ["default", "default"]


def test_trial_slots_and_the_eta_count_gpus_by_share():
    res = lambda cpus, gpus: cfg.Resources(cpus_per_trial=cpus, gpus_per_trial=gpus)  # noqa: E731
    assert trial_slots(res(1, 0.5), {"CPU": 16, "GPU": 4}) == 8
    assert trial_slots(res(4, 0.5), {"CPU": 16, "GPU": 4}) == 4  # CPUs bind first
    assert trial_slots(res(1, 0.1), {"CPU": 64, "GPU": 1}) == 10  # 1.0 / 0.1 is 9.999...
    assert trial_slots(res(1, 1), {"CPU": 16, "GPU": 0}) == 1
    assert trial_slots(res(2, 0), {"CPU": 16}) == 8


def test_bench_pass_runs_one_measurement_at_a_time_on_a_gpu_node(monkeypatch):
    seen = {}
    monkeypatch.setattr(phases, "_run_tuner", lambda fn, configs, **kw: seen.update(kw))
    phases._bench_pass([{"key": "k"}], exp=gpu_experiment(0.5), storage_path="/tmp/x", name="bench",
                       on_result=lambda key, out: None)
    assert seen["max_concurrent"] == 1 and seen["resources"] == {"cpu": 2, "gpu": 1}  # a whole GPU, alone


def test_verify_names_a_tf32_difference():
    row = {"matmul_fp32_precision": "tf32", "conv_fp32_precision": "tf32", "aten_cpu_capability": "AVX2"}
    now = {**verify.environment_now("cpu"), "aten_cpu_capability": "AVX2"}
    assert now["matmul_fp32_precision"] in ("ieee", "tf32")
    diff = verify.env_differences(row, {**now, "matmul_fp32_precision": "ieee", "conv_fp32_precision": "ieee"})
    assert diff == ["matmul_fp32_precision tf32 -> ieee", "conv_fp32_precision tf32 -> ieee"]


@pytest.mark.parametrize("err, oom", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), True),
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"), True),
    (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_any_allocation_failure(err, oom):
    assert rt.is_out_of_memory(err) is oom


class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Every aten op dispatched meanwhile, and the host-syncing ones: on CUDA a boolean-mask index needs
    the mask's count on the host (nonzero) and `.item()` (_local_scalar_dense) waits for the GPU."""

    def __init__(self):
        super().__init__()
        self.syncing = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        indices = args[1] if name.startswith("aten.index") and len(args) > 1 else []
        if "nonzero" in name or "_local_scalar_dense" in name or any(
                torch.is_tensor(i) and i.dtype == torch.bool for i in indices or []):
            self.syncing.append(name)
        return func(*args, **(kwargs or {}))


def _old_loader_batches(x, y, *, batch, seed, epoch, pad, mean, std):
    """The loader before it stopped waiting for the GPU (boolean-mask flip), as the reference stream."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    n = len(y)
    order = torch.randperm(n, generator=gen)
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    std_t, mean_t = torch.tensor(std).view(1, -1, 1, 1), torch.tensor(mean).view(1, -1, 1, 1)
    for lo in range(0, n, batch):
        idx = order[lo:lo + batch]
        dy = torch.randint(0, 2 * pad + 1, (len(idx),), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (len(idx),), generator=gen)
        xb = padded.unfold(2, x.shape[2], 1).unfold(3, x.shape[3], 1)[idx, :, dy, dx]
        m = torch.rand(len(idx), generator=gen) < 0.5
        xb = xb.clone()
        xb[m] = xb[m].flip(3)
        yield xb.float().mul_(1.0 / (255.0 * std_t)).add_(-mean_t / std_t), y[idx]


def test_loader_keeps_its_random_stream_without_host_syncs(prepared_digits):
    from resnet_bench.data.artifact import load_prepared
    from resnet_bench.data.loader import Augment, DeviceLoader

    ds = load_prepared(prepared_digits / "digits")
    x, y = torch.from_numpy(ds.train_x), torch.from_numpy(ds.train_y)
    loader = DeviceLoader(x, y, batch_size=256, shuffle=True, seed=5, augment=Augment(crop_pad=2, flip=True),
                          mean=ds.meta["mean"], std=ds.meta["std"])
    loader.set_epoch(3)
    ops = _Ops()
    with ops:
        got = list(loader)
    assert ops.syncing == []
    want = list(_old_loader_batches(x, y, batch=256, seed=5, epoch=3, pad=2, mean=ds.meta["mean"],
                                    std=ds.meta["std"]))
    assert len(got) == len(want) == 6
    for (gx, gy), (wx, wy) in zip(got, want):
        assert torch.equal(gx, wx) and torch.equal(gy, wy)


def test_evaluation_reads_its_sums_once_not_per_batch(prepared_digits):
    from resnet_bench import train
    from test_train import tiny_cell

    cell = tiny_cell(epochs=1)
    loaders = train._loaders(cell, prepared_digits, torch.device("cpu"))
    model = rt.Compiled(train.build_cell_model(cell, 10, 1), enabled=False)
    ops = _Ops()
    with ops:
        out = train.evaluate(model, loaders[2], cell.runtime, torch.device("cpu"))  # test split: 3 batches
    assert ops.syncing == [] and 0 < out["acc"] <= 1
