"""The ImageNet-class formats, each written small in its real layout and prepared end to end: ILSVRC2012's
three files (a tar of per-class tars, a flat val tar, the devkit's meta.mat and ground truth), Tiny
ImageNet's zip, Chrabaszcz et al.'s downsampled batches; images decoded by content (non-square JPEGs, a
PNG named .JPEG, a CMYK JPEG, a greyscale JPEG); the stores equal torchvision's Resize / CenterCrop."""

import io
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.transforms as T
from PIL import Image

from resnet_bench.data import archives, artifact
from resnet_bench.data import prepare as prep
from resnet_bench.data.decode import decode_rgb
from resnet_bench.data.sources import DatasetError

# Three leaf classes whose ILSVRC2012_IDs are not in wnid order (as in the real devkit, where ID 1 is
# n02119789): labels must follow the sorted wnids (torchvision's ImageFolder numbering), not the IDs.
CLASSES = [(1, "n02119789", "kit fox, Vulpes macrotis"), (2, "n01440764", "tench, Tinca tinca"),
           (3, "n03000134", "chainlink fence")]
COLOURS = {"n01440764": (220, 30, 30), "n02119789": (30, 220, 30), "n03000134": (30, 30, 220)}
SORTED = sorted(w for _, w, _ in CLASSES)


def _image(colour, h, w, seed) -> np.ndarray:
    """A class-coloured h x w RGB image with mild noise."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour)[None, None] + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, kind: str) -> bytes:
    buf = io.BytesIO()
    if kind == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG", quality=95)
    elif kind == "grey":
        Image.fromarray(rgb).convert("L").save(buf, "JPEG", quality=95)
    else:
        Image.fromarray(rgb).save(buf, "PNG" if kind == "png" else "JPEG", quality=95)
    return buf.getvalue()


# Per class: (h, w, encoding) of each train image: landscape, portrait, a PNG named .JPEG, CMYK, grey.
TRAIN_IMAGES = [(30, 45, "jpeg"), (44, 28, "jpeg"), (32, 32, "png"), (36, 40, "cmyk"), (40, 36, "grey")]


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def write_ilsvrc(root: Path, *, extra_train: dict | None = None) -> Path:
    """The three ILSVRC2012 files in `root`, tiny, in torchvision.datasets.ImageNet's layout."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
              "num_train_images"]
    synsets = np.zeros((len(CLASSES) + 1, 1), dtype=[(f, "O") for f in fields])
    for i, (idx, wnid, words) in enumerate(CLASSES):
        synsets[i, 0] = (idx, wnid, words, "a gloss", 0, np.zeros((1, 0)), 0, len(TRAIN_IMAGES))
    # A non-leaf synset (as the real file's 860 internal ones): not a class.
    synsets[len(CLASSES), 0] = (1001, "n00001740", "entity", "the root", 2, np.array([[1, 2]]), 19, 0)
    mat = io.BytesIO()
    scipy.io.savemat(mat, {"synsets": synsets})
    val_ids = [2, 1, 3, 3, 1, 2]  # ground truth of ILSVRC2012_val_00000001..6, in file-name order
    devkit = {"ILSVRC2012_devkit_t12/data/meta.mat": mat.getvalue(),
              "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
                  "".join(f"{i}\n" for i in val_ids).encode()}
    with tarfile.open(root / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tar:
        for name, blob in devkit.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    inner = {}
    for _, wnid, _ in CLASSES:
        members = {f"{wnid}_{k + 1}.JPEG": encode(_image(COLOURS[wnid], h, w, k), kind)
                   for k, (h, w, kind) in enumerate(TRAIN_IMAGES)}
        inner[f"{wnid}.tar"] = _tar_bytes(members)
    inner.update(extra_train or {})
    (root / "ILSVRC2012_img_train.tar").write_bytes(_tar_bytes(inner))
    wnid_of = {idx: wnid for idx, wnid, _ in CLASSES}
    # Written in reverse order: the ground truth follows the sorted file names, not the archive's order.
    val = {f"ILSVRC2012_val_{k:08d}.JPEG": encode(_image(COLOURS[wnid_of[idx]], 34 + k, 50 - k, 100 + k), "jpeg")
           for k, idx in reversed(list(enumerate(val_ids, 1)))}
    (root / "ILSVRC2012_img_val.tar").write_bytes(_tar_bytes(val))
    return root


def prepare(tmp_path, *args) -> artifact.PreparedDataset:
    out = tmp_path / "prepared"
    assert prep.main([*args, "--out", str(out)]) == 0
    return artifact.load_prepared(out)


def dominant(x: np.ndarray) -> int | None:
    """The channel a C x H x W image is strongest in; None for a grey one (all channels alike)."""
    sums = x.reshape(3, -1).astype(np.int64).sum(1)
    return None if sums.max() - sums.min() < 0.05 * sums.max() else int(np.argmax(sums))


def test_ilsvrc2012_prepares_with_torchvision_labels_from_its_three_files(tmp_path):
    src = write_ilsvrc(tmp_path / "imagenet")
    ds = prepare(tmp_path, "--name", "imagenet", "--source", str(src), "--val-fraction", "0.2",
                 "--image-size", "24", "--max-aspect", "1.5", "--eval-resize", "24", "--eval-crop", "20")
    m = ds.meta
    assert m["classes"] == SORTED and m["class_words"] == ["tench, Tinca tinca", "kit fox, Vulpes macrotis",
                                                            "chainlink fence"]
    assert m["counts"] == {"train": 12, "val": 3, "test": 6} and m["format"] == "imagenet"
    assert m["shapes"] == {"train": [3, 24, 36], "val": [3, 20, 20], "test": [3, 20, 20]}
    # The validation images' labels: ground-truth IDs 2, 1, 3, 3, 1, 2 -> sorted-wnid indices 0, 1, 2, 2, 1, 0,
    # each image in its class's colour (red tench, green kit fox, blue fence).
    assert sorted(ds.test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    channel = {SORTED.index(w): "n01440764 n02119789 n03000134".split().index(w) for w in SORTED}
    seen = []
    for xs, ys in ((ds.train_x, ds.train_y), (ds.val_x, ds.val_y), (ds.test_x, ds.test_y)):
        for x, y in zip(xs, ys):
            seen.append(dominant(x))
            assert seen[-1] in (None, channel[int(y)])
    assert seen.count(None) == 3  # the greyscale JPEG of each class, decoded to equal R, G, B
    # Every train image kept its aspect ratio in the 24 x 36 slot: the 30 x 45 one is 24 x 36, the 44 x 28
    # portrait is stored transposed as 24 x 37 -> 36 (the 1.5 cap), the square PNG 24 x 24.
    extents = sorted(map(tuple, ds.train_extents.tolist()))
    assert {(24, 36, 0), (24, 36, 1), (24, 24, 0), (24, 26, 0), (24, 26, 1)} >= set(extents)
    assert len(extents) == 12


def test_ilsvrc2012_refuses_a_train_tar_of_an_unknown_class_and_a_missing_file(tmp_path):
    bad = write_ilsvrc(tmp_path / "a", extra_train={"n09999999.tar": _tar_bytes({"n09999999_1.JPEG": b"x"})})
    with pytest.raises(DatasetError, match=r"'n09999999.tar/n09999999_1.JPEG'.*not <wnid>.tar/<image>"):
        prep.prepare("imagenet", "imagenet", source=bad, out=tmp_path / "o")
    (bad / "ILSVRC2012_img_val.tar").unlink()
    with pytest.raises(DatasetError, match="ILSVRC2012_img_val.tar missing"):
        prep.prepare("imagenet", "imagenet", source=bad, out=tmp_path / "o")


def test_tiny_imagenet_zip_labels_val_by_its_annotations(tmp_path):
    wnids = ["n01443537", "n01629819"]
    items = {"tiny-imagenet-200/wnids.txt": "\n".join(reversed(wnids)).encode(),
             "tiny-imagenet-200/words.txt": b"n01443537\tgoldfish\nn01629819\teuropean fire salamander\n"
                                            b"n09999999\tnot a class\n"}
    colours = {wnids[0]: (220, 30, 30), wnids[1]: (30, 30, 220)}
    for w in wnids:
        for k in range(4):
            items[f"tiny-imagenet-200/train/{w}/images/{w}_{k}.JPEG"] = encode(
                _image(colours[w], 64, 64, k), "grey" if k == 3 else "jpeg")
        items[f"tiny-imagenet-200/train/{w}/{w}_boxes.txt"] = b"ignored\n"
    annotations = []
    for k, w in enumerate([wnids[1], wnids[0], wnids[1]]):
        items[f"tiny-imagenet-200/val/images/val_{k}.JPEG"] = encode(_image(colours[w], 64, 64, 50 + k), "jpeg")
        annotations.append(f"val_{k}.JPEG\t{w}\t0\t0\t10\t10")
    items["tiny-imagenet-200/val/val_annotations.txt"] = "\n".join(annotations).encode()
    items["tiny-imagenet-200/test/images/test_0.JPEG"] = encode(_image((9, 9, 9), 64, 64, 9), "jpeg")
    src = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for name, blob in items.items():
            zf.writestr(name, blob)
    ds = prepare(tmp_path, "--name", "tiny", "--format", "tinyimagenet", "--source", str(src), "--val-fraction", "0.25")
    assert ds.meta["classes"] == wnids and ds.meta["class_words"] == ["goldfish", "european fire salamander"]
    assert ds.meta["counts"] == {"train": 6, "val": 2, "test": 3} and ds.train_x.shape[1:] == (3, 64, 64)
    assert sorted(ds.test_y.tolist()) == [0, 1, 1]
    for x, y in zip(ds.test_x, ds.test_y):
        assert dominant(x) == (0 if y == 0 else 2)
    del items["tiny-imagenet-200/val/images/val_2.JPEG"]
    with zipfile.ZipFile(src, "w") as zf:
        for name, blob in items.items():
            zf.writestr(name, blob)
    with pytest.raises(DatasetError, match="val_annotations.txt names 1 image"):
        prep.prepare("tiny", "tinyimagenet", source=src, out=tmp_path / "o2")


def _batch(n, side, seed, first_label=1):
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 256, (n, 3 * side * side), dtype=np.uint8),
            "labels": [first_label + i % 4 for i in range(n)], "mean": np.zeros(3 * side * side)}


def test_imagenet_downsampled_batches_from_the_release_zips(tmp_path):
    side, src = 8, tmp_path / "imagenet8"
    src.mkdir()
    batches = {"train_data_batch_1": _batch(12, side, 1), "train_data_batch_2": _batch(8, side, 2)}
    with zipfile.ZipFile(src / "Imagenet8_train.zip", "w") as zf:
        for name, b in batches.items():
            zf.writestr(f"Imagenet8_train/{name}", pickle.dumps(b))
    with zipfile.ZipFile(src / "Imagenet8_val.zip", "w") as zf:
        zf.writestr("val_data", pickle.dumps(_batch(6, side, 3)))
    ds = prepare(tmp_path, "--name", "in8", "--format", "imagenet_downsampled", "--source", str(src),
                 "--val-fraction", "0.25")
    assert ds.meta["counts"] == {"train": 16, "val": 4, "test": 6} and ds.meta["num_classes"] == 1000
    assert ds.train_x.shape[1:] == (3, 8, 8) and ds.meta["classes"][:2] == ["1", "2"]
    # Rows in batch order, the R, G, B planes of each 3*S*S row as CIFAR's; labels 1..1000 -> 0..999.
    everything = np.concatenate([batches["train_data_batch_1"]["data"], batches["train_data_batch_2"]["data"]])
    held = {r.tobytes() for r in ds.val_x.reshape(4, -1)}
    kept = np.array([r for r in everything if r.tobytes() not in held])
    assert np.array_equal(ds.train_x.reshape(16, -1), kept)
    assert np.array_equal(ds.test_x.reshape(6, -1), _batch(6, side, 3)["data"])
    assert ds.test_y.tolist() == [i % 4 for i in range(6)]
    mean = kept.reshape(16, 3, -1).transpose(1, 0, 2).reshape(3, -1).mean(1) / 255
    assert np.allclose(ds.meta["mean"], mean)
    with zipfile.ZipFile(src / "Imagenet8_val.zip", "w") as zf:
        zf.writestr("val_data", pickle.dumps(_batch(6, side, 3, first_label=0)))  # 0 is not a 1-based label
    with pytest.raises(DatasetError, match=r"label -1 at index 0 is outside 0..999"):
        prep.prepare("in8", "imagenet_downsampled", source=src, out=tmp_path / "o2")


def test_stores_are_torchvision_resize_and_center_crop(tmp_path):
    """train: Resize(S) then the long side centre-cropped to the cap (portraits transposed); val/test:
    Resize(R) + CenterCrop(C), each equal to torchvision's transforms on the decoded PIL image."""
    sizes = {"a": (31, 57), "b": (64, 23), "c": (40, 40)}  # wide beyond the cap, tall, square
    blobs = {c: encode(_image(col, *sizes[c], i), "jpeg") for i, (c, col) in
             enumerate(zip("abc", ((200, 10, 10), (10, 200, 10), (10, 10, 200))))}
    src = tmp_path / "f"
    for split in ("train", "test"):
        for c, blob in blobs.items():
            (src / split / c).mkdir(parents=True)
            (src / split / c / "x.jpg").write_bytes(blob)
    ds = prepare(tmp_path, "--name", "p", "--format", "imagefolder", "--source", str(src), "--val-fraction", "0",
                 "--image-size", "20", "--max-aspect", "1.5", "--eval-resize", "22", "--eval-crop", "18")
    for c, blob in blobs.items():
        pil = Image.fromarray(decode_rgb(blob, c))
        label = "abc".index(c)
        test = ds.test_x[list(ds.test_y).index(label)].transpose(1, 2, 0)
        assert np.array_equal(test, np.asarray(T.Compose([T.Resize(22), T.CenterCrop(18)])(pil)))
        resized = T.Resize(20)(pil)
        w, h = resized.size
        want = np.asarray(T.CenterCrop((min(h, 30), min(w, 30)))(resized))
        i = list(ds.train_y).index(label)
        eh, ew, transposed = ds.train_extents[i]
        got = ds.train_x[i].transpose(1, 2, 0)[:eh, :ew]
        assert np.array_equal(got.transpose(1, 0, 2) if transposed else got, want)
        assert not ds.train_x[i][:, eh:, :].any() and not ds.train_x[i][:, :, ew:].any()  # zero padding
        assert transposed == (h > w)
    assert ds.meta["resize"]["eval"] == {"policy": "resize_center_crop", "resize": 22, "crop": 18}


def test_content_hash_covers_the_store_policy(tmp_path):
    src = tmp_path / "f"
    for split in ("train", "test"):
        for c in "ab":
            (src / split / c).mkdir(parents=True)
            (src / split / c / "x.jpg").write_bytes(encode(_image((99, 9, 9), 30, 40, 1), "jpeg"))
    base = ["--name", "p", "--format", "imagefolder", "--source", str(src), "--image-size", "16",
            "--val-fraction", "0"]
    hashes = {prepare(tmp_path / k, *base, *extra).meta["content_sha256"] for k, extra in
              {"base": ["--max-aspect", "1.5"], "aspect": ["--max-aspect", "1.0"],
               "resize": ["--max-aspect", "1.5", "--eval-resize", "20"],
               "crop": ["--max-aspect", "1.5", "--eval-crop", "12"]}.items()}
    assert len(hashes) == 4


# ---- the plain tar reader: same members as tarfile, tarfile for everything else ----------------


def _tar_of(path: Path, fmt, members, pax_global=None):
    """A tar (.tar.gz: gzipped) written by Python's tarfile: members = [(name, bytes | None for a dir |
    ("link", target))]."""
    mode = "w:gz" if path.name.endswith(".gz") else "w"
    with tarfile.open(path, mode, format=fmt, pax_headers=pax_global or {}) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            if body is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif isinstance(body, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, body[1]
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return path


def _tarfile_listing(path: Path):
    out = []
    with tarfile.open(path) as tar:
        for m in tar:
            if m.isdir() or m.isfile():
                out.append((m.name, "dir" if m.isdir() else "file", 0 if m.isdir() else m.size,
                            tar.extractfile(m).read() if m.isfile() else None))
    return out


@pytest.mark.parametrize("fmt, pax_global", [
    (tarfile.USTAR_FORMAT, None), (tarfile.GNU_FORMAT, None), (tarfile.PAX_FORMAT, None),
    (tarfile.PAX_FORMAT, {"comment": "d7d05618061fe37d830fb0419063d113c575ccbc"}),  # as `git archive` writes
    (tarfile.PAX_FORMAT, {"path": "elsewhere"}),
], ids=["ustar", "gnu", "pax", "pax-global-comment", "pax-global-path"])
def test_plain_tar_reader_lists_and_reads_what_tarfile_does(tmp_path, fmt, pax_global):
    long = "train/" + "d" * 120 + "/c.jpg"  # over 100 bytes: prefix (ustar) / longname (gnu) / pax path
    members = [("root", None), ("root/train", None), ("root/train/a.jpg", b"A" * 700),
               ("root/" + long, b"B" * 10), ("root/test/b.jpg", b""), ("root/test/\u00e9t\u00e9.jpg", b"C" * 513)]
    path = _tar_of(tmp_path / "a.tar.gz", fmt, members, pax_global)
    got = list(archives.tar_entries(path, 1 << 20, wanted=lambda name: True))
    assert got == _tarfile_listing(path)


def test_plain_tar_reader_hands_a_link_to_tarfile_which_refuses_it(tmp_path):
    path = _tar_of(tmp_path / "l.tar.gz", tarfile.USTAR_FORMAT,
                   [("root", None), ("root/a.jpg", b"A"), ("root/evil.jpg", ("link", "/etc/passwd"))])
    seen = []
    with pytest.raises(DatasetError, match="links refused"):
        for name, *_ in archives.tar_entries(path, 1 << 20):
            seen.append(name)
    assert seen == ["root", "root/a.jpg"]  # each member once: tarfile resumed after the plain reader


def test_plain_tar_reader_leaves_a_bad_checksum_to_tarfile(tmp_path):
    raw = tmp_path / "c.tar"
    with tarfile.open(raw, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("root/a.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    blob = bytearray(raw.read_bytes())
    blob[0] ^= 1  # the name changes, the stored checksum does not
    raw.write_bytes(bytes(blob))
    with pytest.raises(DatasetError):
        list(archives.tar_entries(raw, 1 << 20))


@pytest.mark.parametrize("outer", ["tar", "tar.gz", "pax.tar"])
def test_a_nested_tar_the_plain_reader_leaves_to_tarfile(tmp_path, outer):
    """An inner tar with a pax header (long name): the plain reader gives up on it, seeks back to its start
    and lets tarfile read it (an uncompressed outer tar, or a gzip one, re-read from its start); an outer
    tar that tarfile itself must read (pax) streams its members without seeking: one error line."""
    long = "n01440764_" + "9" * 120 + ".JPEG"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, blob in (("n01440764_1.JPEG", b"A" * 10), (long, b"B" * 600)):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    members = [("n01440764.tar", inner.getvalue()), ("n02119789.tar", _tar_bytes({"n02119789_1.JPEG": b"C"}))]
    if outer == "pax.tar":  # its first header is pax: tarfile reads the outer archive from the start
        members.insert(0, ("x" * 120 + ".txt", b"pax outer"))
    fmt = tarfile.PAX_FORMAT if outer == "pax.tar" else tarfile.USTAR_FORMAT
    path = _tar_of(tmp_path / f"outer.{outer}", fmt, members)
    entries = lambda: archives.tar_entries(path, 1 << 20, wanted=lambda n: True, inner=lambda n: n.endswith(".tar"))
    if outer == "pax.tar":
        with pytest.raises(DatasetError, match="read only from an uncompressed outer archive"):
            list(entries())
        return
    assert [(n, b) for n, _, _, b in entries()] == [
        ("n01440764.tar/n01440764_1.JPEG", b"A" * 10), (f"n01440764.tar/{long}", b"B" * 600),
        ("n02119789.tar/n02119789_1.JPEG", b"C")]
