"""Checkpoints in Ray Tune storage (local path or s3://, gs://...): found, checked, adopted after
an interrupted sweep, dropped when a cell is finished."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


# The train_cell checkpoint file inside each Tune checkpoint directory, and beside it its
# metadata (JSON: cell_id, epoch, bytes, sha256), so that a copy cut short by a kill, a truncated
# or a corrupted file is recognised wherever a checkpoint is loaded, before torch reads it.
CKPT_FILE, CKPT_META = "cell.pt", "cell.json"
CKPT_META_MAX_BYTES = 4096
# ---- checkpoints in storage ----------------------------------------------------------------
# Tune keeps a trial's checkpoints in <storage>/train/<cell_id>/checkpoint_NNNNNN/ (the trial
# directory is named by cell id, see _run_tuner). A checkpoint left there by a sweep that was
# killed is moved to <storage>/resume/<cell_id>/ before the next sweep, whose fresh trial
# would otherwise overwrite it with its own checkpoint_000000.


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def _join(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


# A multi-worker cell's trial drives a Ray Train run whose checkpoints (rank 0's) are in the trial
# directory's WORKERS_RUN/checkpoint_<time>/ (resnet_bench.sweep.distributed).
WORKERS_RUN = "workers"


def workers_run_uri(storage: str, cell_id: str) -> str:
    return _join(storage, "train", cell_id, WORKERS_RUN)


def _checkpoint_dirs(storage: str, cell_id: str) -> list[str]:
    """URIs of the cell's Tune (or Ray Train) checkpoints in storage, oldest first (by their index or time)."""
    import pyarrow.fs

    out = []
    for run_uri in (_join(storage, "train", cell_id), workers_run_uri(storage, cell_id)):
        fs, path = _fs(run_uri)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
            continue
        names = sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path))
                       if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))
        out += [_join(run_uri, n) for n in names]
    return out


def _exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _delete_dir(uri: str) -> None:
    fs, path = _fs(uri)
    if _exists(uri):
        fs.delete_dir(path)


def file_sha256(f, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := f.read(chunk):
        h.update(block)
    return h.hexdigest()


def checkpoint_meta(path: Path, cell_id: str, epoch: int) -> dict:
    """The metadata written beside a finished checkpoint file."""
    with open(path, "rb") as f:
        digest = file_sha256(f)
    return {"cell_id": cell_id, "epoch": epoch, "bytes": path.stat().st_size, "sha256": digest}


def checkpoint_problem(uri: str, cell_id: str | None = None) -> str | None:
    """None when the checkpoint at `uri` (a Tune checkpoint directory, local or s3://...) is whole:
    both files regular, the size and SHA-256 its metadata gives (and, if given, its cell id).
    Otherwise what is wrong, one line. Tune's copy to storage is not atomic (a sweep killed
    mid-copy leaves a truncated file), and a file may be damaged later."""
    import pyarrow.fs

    files = {}
    for name in (CKPT_META, CKPT_FILE):
        fs, path = _fs(_join(uri, name))
        info = fs.get_file_info(path)
        if info.type != pyarrow.fs.FileType.File:
            return f"{_join(uri, name)}: {'missing' if info.type == pyarrow.fs.FileType.NotFound else 'not a file'}"
        files[name] = (fs, path, info.size)
    fs, path, size = files[CKPT_META]
    try:
        if size > CKPT_META_MAX_BYTES:
            raise ValueError(f"{size} bytes")
        with fs.open_input_stream(path) as f:
            meta = json.loads(f.readall())
        want_bytes, want_sha = int(meta["bytes"]), str(meta["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{_join(uri, CKPT_META)}: unreadable checkpoint metadata ({type(err).__name__})"
    if cell_id is not None and meta.get("cell_id") != cell_id:
        return f"{uri}: a checkpoint of cell {meta.get('cell_id')!r}, not {cell_id}"
    fs, path, size = files[CKPT_FILE]
    if size != want_bytes:
        return f"{_join(uri, CKPT_FILE)}: {size} bytes, its metadata says {want_bytes} (truncated)"
    try:
        with fs.open_input_stream(path) as f:
            digest = file_sha256(f)
    except OSError as err:
        return f"{_join(uri, CKPT_FILE)}: unreadable ({err})"
    if digest != want_sha:
        return (f"{_join(uri, CKPT_FILE)}: SHA-256 {digest[:12]}... differs from its metadata's "
                f"{want_sha[:12]}... (corrupt)")
    return None


def cell_checkpoints(storage: str, cell_id: str) -> list[str]:
    """Every checkpoint of the cell in storage (Tune's trial dir and an adopted one), newest first."""
    dirs = _checkpoint_dirs(storage, cell_id)[::-1]
    resume = _join(storage, "resume", cell_id)
    return [*dirs, resume] if _exists(resume) else dirs


def adopt_prior_checkpoint(storage: str, cell_id: str) -> str | None:
    """The URI of the newest complete checkpoint an earlier, interrupted sweep left for this
    cell (moved to <storage>/resume/<cell_id>), or None."""
    import pyarrow.fs

    resume = _join(storage, "resume", cell_id)
    dirs = [d for d in _checkpoint_dirs(storage, cell_id) if checkpoint_problem(d, cell_id) is None]
    if dirs:
        # The trial dir's checkpoints are newer than resume/: that run started from resume/.
        _delete_dir(resume)
        src_fs, src = _fs(dirs[-1])
        dst_fs, dst = _fs(resume)
        dst_fs.create_dir(dst)
        pyarrow.fs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    _delete_dir(workers_run_uri(storage, cell_id))  # its state names the checkpoints just removed
    return resume if _exists(resume) and checkpoint_problem(resume, cell_id) is None else None


def drop_checkpoints(storage: str, cell_id: str) -> None:
    """A finished cell's checkpoints (Tune's and an adopted one) and its model files' copies in storage
    (in cells/ by now) are no longer needed."""
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    _delete_dir(workers_run_uri(storage, cell_id))
    _delete_dir(_join(storage, "resume", cell_id))
    _delete_dir(models_uri(storage, cell_id))


# ---- model files on their way from a trial to cells/ ---------------------------------------------
# A trial (on any node) writes its cell's model files to <storage>/models/<cell_id>/, which every node
# and the driver reach; the driver copies them into cells/ beside the record, checked by size and
# SHA-256 as they stream, before it writes the record; the copies in storage go with the checkpoints.


def models_uri(storage: str, cell_id: str) -> str:
    return _join(storage, "models", cell_id)


def upload_models(storage: str, cell_id: str, local_dir: Path) -> None:
    """The trial's model files (local) to storage, replacing any an earlier attempt left."""
    import pyarrow.fs

    dst_uri = models_uri(storage, cell_id)
    _delete_dir(dst_uri)
    dst_fs, dst = _fs(dst_uri)
    dst_fs.create_dir(dst)
    pyarrow.fs.copy_files(str(Path(local_dir).resolve()), dst, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=dst_fs)


def fetch_model(storage: str, cell_id: str, file: str, *, nbytes: int, sha256: str, target: Path) -> None:
    """A model file from storage into `target` (cells/<file>) atomically, through the record's staging
    folder; ValueError when its size or SHA-256 is not what the trial reported (nothing is written)."""
    from resnet_bench.sweep.results_dir import staged_write

    fs, path = _fs(_join(models_uri(storage, cell_id), file))

    def copy(out) -> None:
        h, n = hashlib.sha256(), 0
        with fs.open_input_stream(path) as f:
            while block := f.read(1 << 20):
                h.update(block)
                n += len(block)
                out.write(block)
        if n != nbytes or h.hexdigest() != sha256:
            raise ValueError(f"{_join(models_uri(storage, cell_id), file)}: {n} bytes, SHA-256 "
                             f"{h.hexdigest()[:12]}...; the trial wrote {nbytes} bytes, {sha256[:12]}...")

    staged_write(Path(target), copy)


def storage_uri(value: str | None) -> str:
    """Tune storage as a URI or absolute path: s3://, gs://... kept as is; local paths resolved."""
    value = value or "scratch/ray_results"
    return value if "://" in value else str(Path(value).resolve())
