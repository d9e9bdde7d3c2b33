"""Checkpoints in Ray Tune storage (local path or s3://, gs://...): found, checked, adopted after
an interrupted sweep, dropped when a cell is finished."""

from __future__ import annotations

import json
from pathlib import Path


# The train_cell checkpoint file inside each Tune checkpoint directory, and beside it its
# size in bytes (JSON), so that a copy to storage cut short by a kill is recognised as such.
CKPT_FILE, CKPT_META = "cell.pt", "cell.json"
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


def _checkpoint_dirs(storage: str, cell_id: str) -> list[str]:
    """URIs of the cell's Tune checkpoints in storage, oldest first (by Tune's index)."""
    import pyarrow.fs

    trial_uri = _join(storage, "train", cell_id)
    fs, path = _fs(trial_uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return []
    names = sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(path))
                   if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))
    return [_join(trial_uri, n) for n in names]


def _exists(uri: str) -> bool:
    import pyarrow.fs

    fs, path = _fs(uri)
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


def _delete_dir(uri: str) -> None:
    fs, path = _fs(uri)
    if _exists(uri):
        fs.delete_dir(path)


def is_complete_checkpoint(uri: str) -> bool:
    """Both files are there and the checkpoint has the size its metadata says (Tune's copy to
    storage is not atomic: a sweep killed mid-copy leaves a truncated file)."""
    fs, path = _fs(_join(uri, CKPT_FILE))
    info = fs.get_file_info(path)
    if not _exists(_join(uri, CKPT_META)) or info.size is None:
        return False
    meta_fs, meta_path = _fs(_join(uri, CKPT_META))
    try:
        with meta_fs.open_input_stream(meta_path) as f:
            meta = json.loads(f.readall())
    except (OSError, ValueError):
        return False
    return meta.get("bytes") == info.size


def adopt_prior_checkpoint(storage: str, cell_id: str) -> str | None:
    """The URI of the newest complete checkpoint an earlier, interrupted sweep left for this
    cell (moved to <storage>/resume/<cell_id>), or None."""
    import pyarrow.fs

    resume = _join(storage, "resume", cell_id)
    dirs = [d for d in _checkpoint_dirs(storage, cell_id) if is_complete_checkpoint(d)]
    if dirs:
        # The trial dir's checkpoints are newer than resume/: that run started from resume/.
        _delete_dir(resume)
        src_fs, src = _fs(dirs[-1])
        dst_fs, dst = _fs(resume)
        dst_fs.create_dir(dst)
        pyarrow.fs.copy_files(src, dst, source_filesystem=src_fs, destination_filesystem=dst_fs)
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    return resume if is_complete_checkpoint(resume) else None


def drop_checkpoints(storage: str, cell_id: str) -> None:
    """A finished cell's checkpoints (Tune's and an adopted one) are no longer needed."""
    for d in _checkpoint_dirs(storage, cell_id):
        _delete_dir(d)
    _delete_dir(_join(storage, "resume", cell_id))


def storage_uri(value: str | None) -> str:
    """Tune storage as a URI or absolute path: s3://, gs://... kept as is; local paths resolved."""
    value = value or "scratch/ray_results"
    return value if "://" in value else str(Path(value).resolve())
