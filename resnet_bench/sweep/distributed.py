"""A multi-worker cell (resources.workers_per_trial > 1): its Tune trial drives a Ray Train TorchTrainer
whose workers train the cell together (DistributedDataParallel, resnet_bench.parallel).

The Tune trial only drives: `trial_resources` gives it no CPU and no GPU (so each of the k workers gets
a whole CPU/GPU bundle of its own, placed by Ray Train anywhere in the cluster) and a token amount of
the head node's `node:__internal_head__` resource: a placement-group bundle must ask for something,
and on the head the driver outlives any worker node that is lost. Ray Train's TuneReportCallback
forwards rank 0's `ray.train.report` results to the Tune trial, so the driver's record writer sees
the same per-epoch and final results as for a one-process cell.

Failures. A lost worker (its process or its node) fails the worker group; Ray Train
(`FailureConfig(max_failures=sweep.max_failures)`) starts a new group, placed where the cluster has
room, and every rank resumes from the last checkpoint rank 0 reported (`ray.train.get_checkpoint()`).
A lost driver is Tune's to retry (its own FailureConfig); the new run resumes from the cell's newest
whole checkpoint in storage. Each group start reports a new `attempt` (its ranks' nodes), which the
record writer keeps as one entry of the record's `attempts`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
from pathlib import Path

from resnet_bench import config as cfg
from resnet_bench.sweep.records import EPOCH_KEYS, failure_record
from resnet_bench.sweep.storage import CKPT_FILE, CKPT_META, WORKERS_RUN

DRIVER_HEAD_RESOURCE = 0.001  # of the head node's `node:__internal_head__` (1 per head)


def trial_resources(res: cfg.Resources):
    """The Tune trial's request for a multi-worker cell (see the module docstring)."""
    from ray import tune

    return tune.PlacementGroupFactory([{"CPU": 0, "node:__internal_head__": DRIVER_HEAD_RESOURCE}])


def worker_resources(res: cfg.Resources) -> dict:
    """Each Ray Train worker's: cpus_per_trial CPUs, and one whole GPU on CUDA."""
    return {"CPU": res.cpus_per_trial, **({"GPU": 1} if res.gpus_per_trial > 0 else {})}


def drive_cell(trial_config: dict) -> None:
    """The Tune trial of a multi-worker cell: run its TorchTrainer until the cell is done or out of retries."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cell = cfg.Cell.model_validate(trial_config["cell"])
    res = cfg.Resources.model_validate(trial_config["resources"])
    gpu = res.gpus_per_trial > 0
    trainer = TorchTrainer(
        _train_worker, train_loop_config=trial_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cell.world_size, use_gpu=gpu,
                                               resources_per_worker=worker_resources(res)),
        run_config=ray.train.RunConfig(
            name=WORKERS_RUN, storage_path=f"{trial_config['storage'].rstrip('/')}/train/{cell.cell_id}",
            callbacks=[TuneReportCallback()],
            # A lost worker or node: a new worker group from the last checkpoint (-1: unlimited).
            failure_config=ray.train.FailureConfig(max_failures=trial_config["max_failures"]),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1)))
    try:
        trainer.fit()
    except Exception as err:  # out of retries: the cell failed; the record says why and where
        from resnet_bench.env import environment, node_info

        cause = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=-8)}"
        record = failure_record(cell, f"worker group failed after {trial_config['max_failures']} restart(s): "
                                      f"{cause}", [], trial_config.get("provenance"),
                                env=environment(cell.runtime.device))
        tune.report({"final": True, "record_json": json.dumps(record, default=str), **node_info()})


def _restore_candidates(trial_config: dict, cell_id: str) -> list[tuple[str, object]]:
    """Ray Train's latest checkpoint (a restarted worker group), the one an interrupted sweep left,
    then every stored one of the cell, newest first (a retried driver starts a fresh Train run)."""
    import ray.train

    from resnet_bench.sweep.storage import cell_checkpoints

    first = [(where, c) for where, c in (("Ray Train's latest", ray.train.get_checkpoint()),
                                         ("adopted", trial_config.get("resume_from"))) if c is not None]
    stored = [("stored", uri) for uri in cell_checkpoints(trial_config["storage"], cell_id)]
    out, seen = [], set()
    for where, ckpt in first + stored:
        key = str(getattr(ckpt, "path", ckpt)).split("://", 1)[-1].rstrip("/")
        if key not in seen:
            seen.add(key)
            out.append((where, ckpt))
    return out


def _train_worker(trial_config: dict) -> None:
    """One rank of the cell (a Ray Train worker, its process group set up by TorchTrainer)."""
    import ray.train

    from resnet_bench.env import node_info
    from resnet_bench.parallel import Ranks
    from resnet_bench.sweep.storage import checkpoint_meta
    from resnet_bench.sweep.trials import WORKDIR_PREFIX, _keep_models, _restore, remove_stale_workdirs
    from resnet_bench.train import pin_numeric_environment, train_cell

    cell = cfg.Cell.model_validate(trial_config["cell"])
    provenance = trial_config.get("provenance") or {}
    # Ray Train starts its workers itself: the pin's environment came with the job's runtime_env
    # (ray_session), its torch flags are set here and again in train_cell.
    pin_numeric_environment(cell, env=False)
    ranks = Ranks.of_process_group()
    import torch.distributed as dist

    node = node_info()
    everyone = ranks.gather((node, os.getpid()))
    workers = [{"rank": r, "node": n} for r, (n, _) in enumerate(everyone)]
    attempt = "-".join(str(pid) for _, pid in everyone)  # one per worker-group start
    backend = dist.get_backend()
    remove_stale_workdirs()
    work = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{cell.cell_id}-{os.getpid()}-"))
    notes: list[str] = []

    def report(result: dict, checkpoint=None) -> None:
        ray.train.report({**result, **node, "attempt": attempt, "workers_json": json.dumps(workers)},
                         checkpoint=checkpoint)

    try:
        candidates = _restore_candidates(trial_config, cell.cell_id)
        if candidates and not _restore(work, cell.cell_id, candidates, notes):
            notes.append("training the cell from scratch")

        def on_checkpoint(path: Path, rec: dict) -> None:
            result = {"final": False, **{k: rec.get(k) for k in EPOCH_KEYS}}
            if notes:
                result["note"] = "; ".join(notes)
                notes.clear()
            checkpoint = None
            if ranks.rank == 0:  # rank 0's is the cell's: every rank holds the same model
                (path.parent / CKPT_META).write_text(json.dumps(checkpoint_meta(path, cell.cell_id, rec["epoch"])))
                checkpoint = ray.train.Checkpoint.from_directory(str(path.parent))
            report(result, checkpoint)

        # A cell error propagates (not recorded here as for one process): raised on one rank only (one
        # GPU out of memory), the other ranks would wait in their next collective for ever. Ray Train
        # stops the whole group, retries it like a lost worker, and drive_cell records the failure.
        # Rank 0 keeps the cell's model files (sweep.keep_models), as a one-process trial does: every
        # rank holds the same weights and, after the final evaluation, rank 0's BN statistics.
        states: dict = {}
        keep = trial_config.get("keep_models", "none") if ranks.rank == 0 else "none"
        record = train_cell(cell, trial_config["paths"]["prepared_dir"], checkpoint_path=work / CKPT_FILE,
                            on_checkpoint=on_checkpoint, provenance=provenance, ranks=ranks, keep_models=keep,
                            on_models=states.update)
        if ranks.rank == 0:
            _keep_models(record, states, work, trial_config["storage"], trial_config["paths"]["prepared_dir"])
        record["node"] = node
        record["distributed"] = {"world_size": cell.world_size, "per_rank_batch": cell.per_rank_batch,
                                 "bn_mode": cell.bn_mode, "backend": backend, "workers": workers}
        final = {k: v for k, v in (record.get("metrics") or {}).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)}
        report({**final, "final": True, "record_json": json.dumps(record, default=str),
                **({"note": "; ".join(notes)} if notes else {})})
    finally:
        shutil.rmtree(work, ignore_errors=True)
