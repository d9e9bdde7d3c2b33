"""Raw sources, read safely: checksums, member names checked, members read under a size cap, pickles
through an allow-list. Every bad input raises one `DatasetError` naming the file (or archive member)
and what was expected. Archives themselves are read by `resnet_bench.data.archives`."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import struct
from pathlib import Path, PurePosixPath

import numpy as np

from resnet_bench.inputs import open_regular

# Largest raw member read into memory. The largest member of the supported releases but one is
# CIFAR-100's `train` pickle (50,000 x 3,072 bytes + labels, about 155 MB; an ILSVRC2012 JPEG is at
# most a few MB, its per-class tars are streamed, not read whole), so 256 MiB admits them and refuses
# a 1 GiB member before it is read. Imagenet64's 1.57 GB batches have their own cap
# (readers.imagenet_downsampled). `--max-member-mb` changes it.
DEFAULT_MAX_MEMBER_MB = 256

class DatasetError(ValueError):
    """A dataset file that is missing, corrupt, tampered with or unsafe."""



def _clean(msg: str) -> str:
    """One line, without the `<_io.BytesIO object at 0x...>` reprs that library errors carry."""
    msg = re.sub(r"<_io\.\w+ object at 0x[0-9a-fA-F]+>", "the data", str(msg))
    return " ".join(msg.split())


# ---- verification -----------------------------------------------------------------------------


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_dir(path: Path) -> str:
    """Hash of a folder: relative paths and contents of every file, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode())
    return h.hexdigest()



def verify_sha256(path: Path, expected: str | None) -> str:
    """The source's SHA-256; a DatasetError naming the file and both hashes when it differs."""
    actual = sha256_file(path) if path.is_file() else sha256_dir(path)
    if expected and actual != expected.lower():
        raise DatasetError(f"checksum mismatch for {path}: expected sha256 {expected.lower()}, "
                           f"actual {actual}")
    return actual


def check_member_name(name: str, archive: Path) -> None:
    """Refuse absolute paths and `..` in archive member names (path traversal)."""
    if not name.startswith(("/", "\\")) and ".." not in name and ":" not in name:
        return  # fast path for the common, plainly safe name (called once per member)
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise DatasetError(f"unsafe member {name!r} in {archive}: absolute path or '..' refused")


# ---- safe unpickling ------------------------------------------------------------------------------


class _AllowListUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR batches contain: dicts, lists, bytes, str, ints and numpy arrays.

    A pickle naming any other global (e.g. os.system via __reduce__) is refused before
    anything is called.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        # Python 3 pickles of protocol <= 2 spell bytes as _codecs.encode(str, 'latin1'): a pure function.
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        if module == "_codecs":
            import codecs

            return codecs.encode
        from numpy._core import multiarray  # numpy >= 2; the old path is an alias of it

        return getattr(multiarray, name)


def safe_unpickle(data: bytes, where: str):
    try:
        return _AllowListUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, struct.error) as err:
        raise DatasetError(f"refused or corrupt pickle {where}: {_clean(err)}") from None


# ---- size caps ----------------------------------------------------------------------------------


def _check_size(name: str, size: int, path: Path, cap: int) -> None:
    if size > cap:
        raise DatasetError(f"member {name!r} in {path} is {size:,} bytes, over the {cap:,}-byte cap "
                           "(--max-member-mb)")


def _read_capped(f, name: str, path: Path, cap: int) -> bytes:
    blob = f.read(cap + 1)  # never more than the cap, whatever the header claims
    _check_size(name, len(blob), path, cap)
    return blob
