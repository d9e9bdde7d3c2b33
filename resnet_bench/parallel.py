"""Data parallelism inside one cell: the ranks of a `torch.distributed` process group training it.

One cell on k workers (resources.workers_per_trial, Cell.world_size) is DistributedDataParallel:
every rank holds the whole model, trains on `per_rank_batch = batch_size / k` images of each global
batch (its shard, resnet_bench.data.loader.shard_indices) and DDP averages the gradients over the
ranks (each rank's gradient divided by k, then summed: the mean of the ranks' mean gradients), so the
optimiser step is the same on every rank. Batch norm is per rank (each rank's statistics over its own
images, as in He et al. 2015's 8 GPUs x 32), or over the global batch with `arch.sync_bn`
(SyncBatchNorm, CUDA). Running statistics: DDP hands rank 0's buffers to every rank at the start of
each training forward, and `sync_buffers` does it again before an evaluation, so every rank evaluates
(and rank 0 checkpoints) the same model: rank 0's.

Who starts the group is the caller's: Ray Train's TorchTrainer (resnet_bench.sweep.distributed) on a
cluster, or two local processes (tests, scripts/gpu_acceptance.py). This module only uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class Ranks:
    """This process's place in the cell's process group (rank 0 of 1: no group)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def of_process_group(cls) -> Ranks:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return cls()
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size())

    def wrap(self, model: torch.nn.Module, *, sync_bn: bool, device: torch.device) -> torch.nn.Module:
        """The module the training step calls: `model` itself, or DDP around it (same parameters)."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        if sync_bn:  # replaces the BatchNorm modules in place of `model`'s children (same parameters)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        # broadcast_buffers (DDP's default): rank 0's running statistics are every rank's before each
        # training forward. One device per process: device_ids only on CUDA (None on CPU: gloo).
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                       broadcast_buffers=True)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """`values` (float64, on the device) summed over the ranks: one collective, no host sync."""
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Rank 0's buffers (BN running statistics) on every rank."""
        if self.distributed:
            import torch.distributed as dist

            for buf in model.buffers():
                dist.broadcast(buf, src=0)

    def gather(self, obj) -> list:
        """Every rank's `obj` (picklable), in rank order."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Ranks()


# ---- k local processes without Ray (tests, scripts/gpu_acceptance.py) --------------------------------


def launch_local(cell: dict, prepared_dir: str | Path, out_dir: str | Path, *, backend: str,
                 env: dict | None = None, timeout_s: float = 900) -> dict:
    """Train `cell` on `cell["world_size"]` processes of this machine (a file:// rendezvous in `out_dir`,
    `backend` gloo or nccl; rank r on GPU r under nccl), each started as `python -m resnet_bench.parallel`
    with `env`. Returns rank 0's record; `out_dir/cell.pt` is rank 0's last checkpoint."""
    import json
    import subprocess
    import sys

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cell.json").write_text(json.dumps(cell))
    (out / "rendezvous").unlink(missing_ok=True)  # torch's file:// store must start from no file
    world = int(cell["world_size"])
    procs = [subprocess.Popen([sys.executable, "-m", "resnet_bench.parallel", str(out / "cell.json"),
                               str(prepared_dir), str(out), str(rank), backend], env=env)
             for rank in range(world)]
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    if any(codes):
        raise RuntimeError(f"local ranks exited with {codes}")
    return json.loads((out / "record.json").read_text())


def _main(argv: list[str]) -> int:
    import json
    import os

    import torch.distributed as dist

    from resnet_bench import config as cfg
    from resnet_bench.train import train_cell

    cell_json, prepared, out, rank, backend = argv
    cell, rank = cfg.Cell.model_validate(json.loads(Path(cell_json).read_text())), int(rank)
    if backend == "nccl":
        torch.cuda.set_device(rank)  # the cell runs on `cuda`: this process's GPU
    dist.init_process_group(backend, init_method=f"file://{os.path.abspath(out)}/rendezvous", rank=rank,
                            world_size=cell.world_size)
    try:
        record = train_cell(cell, prepared, checkpoint_path=Path(out) / "cell.pt", ranks=Ranks.of_process_group())
        if rank == 0:
            record["distributed"] = {"world_size": cell.world_size, "per_rank_batch": cell.per_rank_batch,
                                     "bn_mode": cell.bn_mode, "backend": backend}
            (Path(out) / "record.json").write_text(json.dumps(record, default=str))
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
