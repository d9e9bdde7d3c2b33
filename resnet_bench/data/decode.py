"""Image decoding by content, in one place, and the resize policies of the prepared stores.

A member is decoded as the format its first bytes declare (magic numbers), never by its name: the
ILSVRC2012 train set holds a PNG named `.JPEG`, and a PostScript file named `.jpg` must never reach
Ghostscript through Pillow's EPS plugin. Each blob goes to the one decoder of its format. JPEG goes
through libjpeg-turbo in strict mode (simplejpeg): "Corrupt JPEG data" warnings, which Pillow
ignores, are errors; CMYK/YCCK JPEGs are checked the same way, then converted to RGB by Pillow as
torchvision's `ImageFolder` loader (`PIL.Image.convert("RGB")`) converts them.

The resizes are torchvision's on PIL images, step by step, so that a stored image is exactly what
`Resize` / `CenterCrop` give (bilinear, Pillow's antialiased filter):

- train store: `Resize(size)` (shorter side to `size`, the longer `int(size * long / short)`), the
  longer side centre-cropped to `round(size * max_aspect)` when it exceeds it; a portrait image is
  stored transposed, so every stored image is `size` rows high and at most `round(size * max_aspect)`
  wide (the slot), its true extent recorded.
- evaluation store: `Resize(eval_resize)` then `CenterCrop(eval_crop)`.
"""

from __future__ import annotations

import io

import numpy as np

from resnet_bench.data.sources import DatasetError, _clean

# Leading bytes -> the Pillow format name a blob is decoded as. Sources: JPEG SOI + marker (ITU T.81),
# PNG signature (RFC 2083), GIF87a/89a, BMP "BM", TIFF II*\0 / MM\0*, WebP "RIFF....WEBP",
# Netpbm "P1".."P6" (Pillow's PPM plugin reads all six).
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
# Largest image, in pixels, decoded: Pillow's own decompression-bomb threshold
# (PIL.Image.MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3 = 89,478,485 px, where Pillow only warns);
# here it is an error. Each worker holds at most one decoded image at a time.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
FILTER = "bilinear (Pillow, antialiased)"


def sniff_format(blob: bytes) -> str | None:
    """The image format `blob` starts with (one of FORMATS), or None."""
    for magic, fmt in _MAGIC:
        if blob.startswith(magic):
            return fmt
    if blob[:4] == b"RIFF" and blob[8:12] == b"WEBP":
        return "WEBP"
    if len(blob) > 2 and blob[0:1] == b"P" and blob[1:2] in b"123456" and blob[2:3] in b" \t\r\n#":
        return "PPM"
    return None


def _to_rgb(im, where: str) -> np.ndarray:
    """H x W x 3 uint8 of a Pillow image; 16-bit grey is scaled (v * 255 / 65535, rounded), not clipped."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DatasetError(f"image {where}: {im.mode} values outside 0..65535 are not a 16-bit image")
        # Integer round-half-up of v * 255 / 65535 (= v / 257), exact for every 16-bit value.
        a8 = ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(a8[..., None], 3, axis=2)
    if im.mode not in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La", "RGBa"):
        raise DatasetError(f"image {where}: pixel mode {im.mode} is not supported (8/16-bit grey, palette, "
                           "RGB(A), CMYK)")
    return np.asarray(im.convert("RGB"))


def _check_pixels(w: int, h: int, where: str) -> None:
    if w * h > MAX_PIXELS:
        raise DatasetError(f"image {where} is {w} x {h} = {w * h:,} pixels, over the {MAX_PIXELS:,}-pixel "
                           "limit (Pillow's decompression-bomb threshold)")


def _pillow(blob: bytes, fmt: str, where: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(blob), formats=[fmt]) as im:
            _check_pixels(*im.size, where)
            im.load()
            return _to_rgb(im, where)
    except UnidentifiedImageError:
        raise DatasetError(f"corrupt image {where}: not a valid {fmt} file (its first bytes say {fmt})") from None
    except DatasetError:
        raise
    except Exception as err:  # Pillow raises many types for corrupt data
        raise DatasetError(f"corrupt image {where}: {type(err).__name__}: {_clean(err)}") from None


def decode_rgb(blob: bytes, where: str) -> np.ndarray:
    """H x W x 3 uint8 RGB of an image file's bytes, decoded only as the format its content declares."""
    fmt = sniff_format(blob)
    if fmt is None:
        raise DatasetError(f"corrupt image {where}: not a valid image: its first bytes {blob[:8]!r} are none of "
                           f"{', '.join(FORMATS)}")
    if fmt != "JPEG":
        return _pillow(blob, fmt, where)
    import simplejpeg

    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(blob)
        _check_pixels(w, h, where)
        if colorspace != "CMYK":  # grey, RGB, YCbCr: libjpeg-turbo converts to RGB itself
            return simplejpeg.decode_jpeg(blob, colorspace="RGB", strict=True)
        simplejpeg.decode_jpeg(blob, colorspace="CMYK", strict=True)  # checks the scan data strictly
    except ValueError as err:
        raise DatasetError(f"corrupt image {where}: not a valid JPEG: {_clean(err)}") from None
    return _pillow(blob, "JPEG", where)  # Pillow's CMYK -> RGB, as torchvision's loader


# ---- torchvision's Resize and CenterCrop on PIL images ------------------------------------------------


def resized_size(h: int, w: int, short: int) -> tuple[int, int]:
    """(new_h, new_w) of torchvision `Resize(short)`: shorter side `short`, longer int(short * long / short_side)
    (torchvision.transforms.functional._compute_resized_output_size)."""
    if w <= h:
        return int(short * h / w), short
    return short, int(short * w / h)


def resize(rgb: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Pillow's bilinear (antialiased) resize of H x W x 3 uint8 to new_h x new_w (torchvision's PIL path)."""
    if rgb.shape[:2] == (new_h, new_w):
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR))


def center_crop(rgb: np.ndarray, crop_h: int, crop_w: int, where: str) -> np.ndarray:
    """torchvision `CenterCrop((crop_h, crop_w))`: offsets int(round((size - crop) / 2)) (Python round)."""
    h, w = rgb.shape[:2]
    if crop_h > h or crop_w > w:
        raise DatasetError(f"image {where} is {w} x {h}, smaller than the {crop_w} x {crop_h} centre crop "
                           "(eval_crop); lower eval_crop or set eval_resize")
    top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
    return rgb[top:top + crop_h, left:left + crop_w]


def max_long_side(size: int, max_aspect: float) -> int:
    """The train store's slot width: the longest side kept, round(size * max_aspect) (half up)."""
    return int(size * max_aspect + 0.5)


def train_image(rgb: np.ndarray, size: int, max_aspect: float, where: str) -> tuple[np.ndarray, bool]:
    """(image in stored orientation, transposed?): `Resize(size)`, the longer side centre-cropped to the
    cap, portrait images transposed so that the stored image is `size` rows high."""
    h, w = resized_size(*rgb.shape[:2], size)
    out = resize(rgb, h, w)
    cap = max_long_side(size, max_aspect)
    if max(h, w) > cap:
        out = center_crop(out, min(h, cap), min(w, cap), where)
    if out.shape[0] > out.shape[1]:
        return np.ascontiguousarray(out.transpose(1, 0, 2)), True
    return out, False


def eval_image(rgb: np.ndarray, resize_to: int, crop: int, where: str) -> np.ndarray:
    """`Resize(resize_to)` (0: none) then `CenterCrop(crop)` (0: none; the resized square when resizing)."""
    out = rgb
    if resize_to:
        out = resize(out, *resized_size(*rgb.shape[:2], resize_to))
        crop = crop or resize_to
    return center_crop(out, crop, crop, where) if crop else out
