"""The `collect` stage: every cell result into tidy pandas tables.

- `results/cells.{csv,parquet}`: one row per cell of the grid (config, final
  metrics, status, environment). Failed and missing cells keep their row.
- `results/epochs.{csv,parquet}`: one row per cell-epoch (learning curves;
  the CSV is declared as `dvc plots`).
- `results/metrics.json`: headline numbers for `dvc metrics show`.

Every column is listed in `CELL_COLUMNS` / `EPOCH_COLUMNS` with its unit;
docs/results_schema.md is generated from them (`--schema-doc`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

# (column, description with unit). Order here is column order in the tables.
CELL_COLUMNS: list[tuple[str, str]] = [
    ("cell_id", "stable id: first 12 hex of SHA-256 of the resolved config (experiment label excluded)"),
    ("status", "ok | diverged (NaN/inf loss) | failed (error recorded) | missing (expected, no result file)"),
    ("error", "error text of a failed or diverged cell, else empty"),
    ("experiment", "experiment name (experiments/<name>.yaml)"),
    ("dataset", "prepared dataset name"),
    ("model", "registered model name, e.g. resnet50_v2"),
    ("version", "v1 (post-activation, He et al. 2015) or v2 (full pre-activation, He et al. 2016)"),
    ("unit", "residual unit (He et al. 2016 Fig. 4): original, bn_after_add, relu_before_add, "
             "relu_only_preact, full_preact"),
    ("depth", "number of weighted layers (18, 50, 110, ...)"),
    ("seed", "training seed (Python, NumPy, torch)"),
    ("stem", "imagenet (7x7/2 conv + max-pool) or cifar (3x3/1 conv)"),
    ("width", "base channels; empty = the family's default (64 ImageNet, 16 CIFAR)"),
    ("zero_init_residual", "last BN of each residual branch initialised to zero"),
    ("recipe", "named training recipe (resnet_bench.config.RECIPES)"),
    ("epochs", "epochs requested"),
    ("batch_size", "training batch size, images"),
    ("lr", "peak learning rate"),
    ("weight_decay", "SGD weight decay"),
    ("schedule", "learning-rate schedule: step | cosine | onecycle | constant"),
    ("label_smoothing", "cross-entropy label smoothing"),
    ("device", "cpu or cuda"),
    ("amp", "autocast dtype on CUDA: none | bf16 | fp16 (CPU: none, float32)"),
    ("channels_last", "NHWC memory format"),
    ("compile", "torch.compile used"),
    ("threads", "torch CPU threads (CPU runs)"),
    ("test_acc", "test top-1 accuracy, fraction 0..1, final model"),
    ("test_error_pct", "100 x (1 - test_acc), %"),
    ("test_top5_acc", "test top-5 accuracy, fraction (datasets with 100+ classes)"),
    ("test_loss", "test cross-entropy, nats"),
    ("best_val_acc", "best validation top-1 accuracy over epochs, fraction"),
    ("best_val_epoch", "epoch of best_val_acc (1-based)"),
    ("final_val_acc", "validation top-1 accuracy after the last epoch, fraction"),
    ("final_train_loss", "mean training loss of the last epoch, nats"),
    ("epochs_completed", "epochs trained"),
    ("train_time_s", "wall time of the cell (data load, training, evaluation), s"),
    ("train_img_per_s", "training-loop throughput incl. on-device augmentation, mean over epochs, images/s "
                        "(concurrent cells may share the device: use bench_train_img_per_s to compare)"),
    ("params", "trainable parameters"),
    ("fwd_gflops", "forward GFLOPs per image at the dataset's input size (FLOPs = 2 x MACs)"),
    ("bench_train_img_per_s", "train-step throughput from the isolated bench pass, median, images/s"),
    ("bench_infer_img_per_s", "inference throughput from the isolated bench pass, median, images/s"),
    ("bench_batch_size", "batch the bench pass used (after any out-of-memory halving), images"),
    ("peak_mem_bytes", "peak training memory, bytes: CUDA max_memory_allocated, on CPU saved activations + "
                       "parameters + gradients + optimiser state"),
    ("saved_activation_bytes", "bytes autograd saves for backward at the bench batch, each storage once"),
    ("peak_rss_bytes", "peak resident set size of the bench process, bytes"),
    ("git_commit", "commit of the code that produced the cell (-dirty: uncommitted changes)"),
    ("torch_version", "torch version"),
    ("cpu_model", "CPU model name"),
    ("gpu_name", "GPU name, empty on CPU"),
    ("torch_threads", "torch intra-op threads during training"),
    ("started_at", "UTC start time, ISO-8601"),
    ("finished_at", "UTC end time, ISO-8601"),
]
EPOCH_COLUMNS: list[tuple[str, str]] = [
    ("cell_id", "the cell's id (join key to cells)"),
    ("experiment", "experiment name"), ("dataset", "dataset name"), ("model", "model name"),
    ("version", "v1 or v2"), ("unit", "residual unit"), ("depth", "depth"), ("seed", "seed"),
    ("epoch", "epoch, 1-based"),
    ("train_loss", "mean training cross-entropy over the epoch, nats"),
    ("train_acc", "training top-1 accuracy over the epoch (augmented batches), fraction"),
    ("val_loss", "validation cross-entropy after the epoch, nats"),
    ("val_acc", "validation top-1 accuracy after the epoch, fraction"),
    ("lr", "learning rate at the epoch's last step"),
    ("epoch_s", "wall time of the epoch's training loop, s"),
    ("train_img_per_s", "training-loop throughput of the epoch, images/s"),
]
NUMERIC_COLUMNS = ["lr", "weight_decay", "label_smoothing", "test_acc", "test_error_pct", "test_top5_acc",
                   "test_loss", "best_val_acc", "best_val_epoch", "final_val_acc", "final_train_loss",
                   "epochs_completed", "train_time_s", "train_img_per_s", "params", "fwd_gflops",
                   "bench_train_img_per_s", "bench_infer_img_per_s", "bench_batch_size", "peak_mem_bytes",
                   "saved_activation_bytes", "peak_rss_bytes", "torch_threads"]
TEXT_COLUMNS = ["error", "git_commit", "torch_version", "cpu_model", "gpu_name", "started_at", "finished_at"]
SORT_KEYS = ["experiment", "dataset", "version", "unit", "depth", "seed", "cell_id"]


class CollectError(ValueError):
    pass


def read_cells(cells_dir: Path) -> list[dict]:
    """Every result file, sorted by name; a malformed one is an error naming it."""
    out = []
    for path in sorted(Path(cells_dir).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            rec["config"], rec["cell_id"], rec["status"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise CollectError(f"malformed cell result {path}: {type(err).__name__}: {err}") from None
        out.append(rec)
    return out


def cell_row(rec: dict) -> dict:
    c, m = rec["config"], rec.get("metrics") or {}
    r, rt = c.get("recipe", {}), c.get("runtime", {})
    env = rec.get("env") or {}
    hw, versions = env.get("hardware") or {}, env.get("versions") or {}
    test_acc = m.get("test_acc")
    row = {
        "cell_id": rec["cell_id"], "status": rec["status"], "error": rec.get("error") or "",
        **{k: c.get(k) for k in ("experiment", "dataset", "model", "version", "unit", "depth", "seed")},
        **{k: c.get("arch", {}).get(k) for k in ("stem", "width", "zero_init_residual")},
        "recipe": r.get("name"), **{k: r.get(k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                          "schedule", "label_smoothing")},
        **{k: rt.get(k) for k in ("device", "amp", "channels_last", "compile", "threads")},
        "test_acc": test_acc, "test_error_pct": None if test_acc is None else 100.0 * (1.0 - test_acc),
        **{k: m.get(k) for k in ("test_top5_acc", "test_loss", "best_val_acc", "best_val_epoch", "final_val_acc",
                                 "final_train_loss", "epochs_completed", "train_time_s", "train_img_per_s",
                                 "params", "fwd_gflops", "bench_train_img_per_s", "bench_infer_img_per_s",
                                 "bench_batch_size", "peak_mem_bytes", "saved_activation_bytes",
                                 "peak_rss_bytes")},
        "git_commit": env.get("git_commit"), "torch_version": versions.get("torch"),
        "cpu_model": hw.get("cpu_model"), "gpu_name": hw.get("gpu_name"), "torch_threads": hw.get("torch_threads"),
        "started_at": rec.get("started_at"), "finished_at": rec.get("finished_at"),
    }
    return row


def cells_table(records: list[dict], expected: list[dict] | None = None) -> pd.DataFrame:
    """One row per cell; expected cells without a result get status 'missing'."""
    rows = [cell_row(r) for r in records]
    have = {r["cell_id"] for r in records}
    for e in expected or []:
        if e["cell_id"] not in have:
            rows.append(cell_row({"cell_id": e["cell_id"], "status": "missing", "config": e["config"],
                                  "error": "no result file (not run yet, or the sweep was interrupted)"}))
    df = pd.DataFrame(rows, columns=[c for c, _ in CELL_COLUMNS])
    # Fixed dtypes whatever the values: metrics float (NaN when absent), text "" when absent,
    # so the table's schema does not depend on which cells happened to finish.
    for col in NUMERIC_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    for col in TEXT_COLUMNS:
        df[col] = df[col].fillna("").astype(str)
    return _sorted(df)


def epochs_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for rec in records:
        c = rec["config"]
        key = {k: c.get(k) for k in ("experiment", "dataset", "model", "version", "unit", "depth", "seed")}
        for e in rec.get("epochs") or []:
            rows.append({"cell_id": rec["cell_id"], **key, **{k: e.get(k) for k, _ in EPOCH_COLUMNS[8:]}})
    df = pd.DataFrame(rows, columns=[c for c, _ in EPOCH_COLUMNS])
    return _sorted(df, extra=["epoch"])


def _sorted(df: pd.DataFrame, extra=()) -> pd.DataFrame:
    keys = [*SORT_KEYS, *extra]
    return df.sort_values(keys, kind="mergesort", na_position="last").reset_index(drop=True)


def headline_metrics(cells: pd.DataFrame) -> dict:
    """Counts by status, and per dataset/model the mean test accuracy over ok seeds."""
    out = {"cells": int(len(cells))}
    for status in ("ok", "diverged", "failed", "missing"):
        out[status] = int((cells["status"] == status).sum())
    by = {}
    ok = cells[cells["status"] == "ok"]
    for (ds, model, unit), g in ok.groupby(["dataset", "model", "unit"], sort=True):
        key = f"{ds}/{model}" + ("" if unit in ("original", "full_preact") else f"/{unit}")
        by[key] = {"test_acc_mean": round(float(g["test_acc"].mean()), 6), "n_seeds": int(len(g))}
    out["test_acc"] = by
    return out


def write_tables(cells: pd.DataFrame, epochs: pd.DataFrame, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, df in (("cells", cells), ("epochs", epochs)):
        df.to_csv(out / f"{name}.csv", index=False)
        df.to_parquet(out / f"{name}.parquet", index=False)
    (out / "metrics.json").write_text(json.dumps(headline_metrics(cells), indent=1, sort_keys=True) + "\n")


def schema_doc() -> str:
    lines = ["# Results schema", "",
             "Generated from `resnet_bench/collect.py` (`python -m resnet_bench.collect --schema-doc`).", "",
             "## results/cells.csv, results/cells.parquet (one row per cell)", "",
             "| column | meaning (unit) |", "| --- | --- |"]
    lines += [f"| `{c}` | {d} |" for c, d in CELL_COLUMNS]
    lines += ["", "## results/epochs.csv, results/epochs.parquet (one row per cell-epoch)", "",
              "| column | meaning (unit) |", "| --- | --- |"]
    lines += [f"| `{c}` | {d} |" for c, d in EPOCH_COLUMNS]
    lines += ["", "## results/metrics.json", "",
              "`cells`, `ok`, `diverged`, `failed`, `missing`: counts of cells by status; "
              "`test_acc.<dataset>/<model>[/<unit>]`: `test_acc_mean` (fraction, mean over ok seeds) "
              "and `n_seeds`.", ""]
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="resnet-bench collect", description="Tables of all cells.")
    p.add_argument("--cells", default="results/cells", help="folder of <cell_id>.json results")
    p.add_argument("--expected", help="expected_cells.json from the sweep: cells without a result show as missing")
    p.add_argument("--out", default="results")
    p.add_argument("--schema-doc", action="store_true", help="print the column documentation (markdown)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.schema_doc:
        print(schema_doc())
        return 0
    try:
        records = read_cells(Path(args.cells))
    except CollectError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    expected = json.loads(Path(args.expected).read_text()) if args.expected and Path(args.expected).exists() \
        else None
    cells, epochs = cells_table(records, expected), epochs_table(records)
    write_tables(cells, epochs, Path(args.out))
    counts = cells["status"].value_counts().reindex(["ok", "diverged", "failed", "missing"], fill_value=0)
    print(f"collected {len(cells)} cells ({', '.join(f'{k} {v}' for k, v in counts.items())}), "
          f"{len(epochs)} epoch rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
