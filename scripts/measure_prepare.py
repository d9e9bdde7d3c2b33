"""Wall time and peak memory of `python -m resnet_bench.data.prepare` on an image-folder archive.

Timed region: the whole prepare process, start to exit (imports, both passes over the archive,
decoding, the content hash, fsync). Memory: the process tree (prepare + its decode workers) sampled
every 20 ms with psutil; reported as the peak of the summed RSS, the peak of the summed PSS
(shared pages split between the processes that map them: the honest total) and the largest single
process's RSS (what `/usr/bin/time -v` calls "Maximum resident set size").

    python scripts/measure_prepare.py --source ../shared/datasets/cifar10-jpeg.tar.gz --repeats 3
    python scripts/measure_prepare.py --synthetic 10000 --synthetic 100000 --repeats 3

`--synthetic N` writes N train + N/10 test random 32x32 JPEGs (10 classes) to a temporary .tar.gz.
`--code DIR` runs the resnet_bench package found in DIR (e.g. an export of an older commit).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]


def synthetic_archive(path: Path, n_train: int, seed: int = 0) -> Path:
    import simplejpeg

    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for split, n in (("train", n_train), ("test", max(10, n_train // 10))):
            for i in range(n):
                blob = simplejpeg.encode_jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), quality=90)
                info = tarfile.TarInfo(f"synth/{split}/c{i % 10}/{i:07d}.jpg")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return path


def tree_memory(proc: psutil.Process) -> tuple[int, int, int]:
    """(sum RSS, sum PSS, max RSS) over `proc` and its children, bytes; vanished processes skipped."""
    rss = pss = top = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            m = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, top = rss + m.rss, pss + m.pss, max(top, m.rss)
    return rss, pss, top


def run_once(source: Path, out: Path, code: Path, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code)}
    cmd = [sys.executable, "-m", "resnet_bench.data.prepare", "--name", "m", "--format", "imagefolder",
           "--source", str(source), "--out", str(out), *extra]
    t0 = time.perf_counter()
    # cwd=code: `python -m` puts the working directory first on sys.path
    proc = subprocess.Popen(cmd, env=env, cwd=code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = [0, 0, 0]
    while proc.poll() is None:
        try:
            peak = [max(a, b) for a, b in zip(peak, tree_memory(ps))]
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"prepare failed: {err.decode()}")
    artifact = sum(f.stat().st_size for f in out.iterdir())
    return {"wall_s": wall, "sum_rss": peak[0], "sum_pss": peak[1], "max_rss": peak[2], "artifact": artifact}


def summarise(label: str, runs: list[dict]) -> str:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    mb = 1e6
    walls = [r["wall_s"] for r in runs]
    return (f"| {label} | {med['artifact'] / mb:,.0f} | {med['wall_s']:.1f} ({min(walls):.1f}-{max(walls):.1f}) | "
            f"{med['sum_pss'] / mb:,.0f} | {med['sum_rss'] / mb:,.0f} | {med['max_rss'] / mb:,.0f} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", action="append", default=[], help="an image-folder archive or folder")
    p.add_argument("--synthetic", action="append", type=int, default=[], help="N synthetic train images")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--code", default=str(REPO), help="folder holding the resnet_bench package to run")
    p.add_argument("--label", default="", help="prefix of each row's label, e.g. the commit")
    p.add_argument("extra", nargs="*", help="extra prepare arguments after --, e.g. -- --workers 1")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(dir=REPO / "scratch" if (REPO / "scratch").is_dir() else None) as tmp:
        tmp = Path(tmp)
        sources = [(Path(s).name, Path(s)) for s in args.source]
        for n in args.synthetic:
            sources.append((f"synthetic {n:,} train", synthetic_archive(tmp / f"synth{n}.tar.gz", n)))
        for label, src in sources:
            runs = [run_once(src, tmp / f"out{i}", Path(args.code), args.extra) for i in range(args.repeats)]
            rows.append(summarise(f"{args.label}{label}", runs))
    print(f"{psutil.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} at the end, {args.repeats} runs, median (min-max)\n")
    print("| input | artifact MB | wall s | peak PSS MB (tree) | peak RSS MB (tree sum) | max RSS MB (one process) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
