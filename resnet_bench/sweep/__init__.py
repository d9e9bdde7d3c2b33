"""The `sweep` stage: every cell of the experiment's grid as a Ray Tune trial.

Two phases:
1. train: each pending cell trains as one trial, concurrently as resources
   allow. The driver writes the cell's result file
   (`results/<experiment>/cells/<id>.json`)
   atomically the moment the trial ends, so a killed sweep loses no finished
   cell, and a rerun trains only cells without a result (failed ones again).
2. bench: throughput/memory of each distinct architecture x input shape,
   one measurement at a time (never two timing runs sharing a GPU or the
   CPUs), merged into the cells' records.

Local Ray by default; `RAY_ADDRESS` or `sweep.ray_address` joins a cluster.
Fault tolerance is Ray Tune's: every epoch's checkpoint is reported to Tune,
which persists it under `storage_path`; a trial whose worker or node dies is
retried up to `sweep.max_failures` times and resumes from its last checkpoint
on any node. A cell that exhausts its retries is recorded `failed`.

The package follows those parts: `driver` (the entry point, `python -m resnet_bench.sweep`),
`phases` (the Tune runs), `trials` (what runs in a worker), `callbacks` (record writing in the
driver), `records` (cell records on disk), `storage` (checkpoints), `cluster` (Ray), `progress`
(the console).
"""
