"""Loading, VGG pre/de-processing and atomic saving of images.

Layouts: a *picture* is a ``uint8`` array of shape ``(rows, cols, 3)`` in RGB
order.  A *network image* is a ``float32`` array or tensor of shape
``(1, rows, cols, 3)`` in BGR order with the ImageNet channel means
subtracted, the input ``keras.applications.vgg19.preprocess_input`` produces.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import urllib.parse
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageOps

from nst_keras.config import IMAGENET_MEAN_BGR
from nst_keras.errors import UserError

MIN_SIDE = 32  # The smallest input VGG accepts (five 2x2 poolings).

_RESAMPLE = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
    "box": Image.BOX,
    "hamming": Image.HAMMING,
}


def is_url(source) -> bool:
    return isinstance(source, str) and source.lower().startswith(("http://", "https://"))


def fetch(source: str) -> str:
    """Returns a local path for ``source``, downloading a URL into Keras' cache.

    URLs go through ``keras.utils.get_file`` (cache ``~/.keras/datasets``), as
    the keras.io tutorial fetches its two images.
    """
    if not is_url(source):
        if not os.path.exists(source):
            raise UserError(f"image {source!r} does not exist; check the path")
        if os.path.isdir(source):
            raise UserError(f"image {source!r} is a directory; give an image file")
        return source
    import keras

    name = os.path.basename(urllib.parse.urlparse(source).path) or "image"
    chatter = io.StringIO()  # Keras' "Downloading data from" line, shown only on success
    try:
        with contextlib.redirect_stdout(chatter):
            path = keras.utils.get_file(name, source)
        sys.stdout.write(chatter.getvalue())
        return path
    except Exception as e:  # noqa: BLE001 - any download failure is the user's network
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"could not download image {source!r} ({reason}); check the URL and "
            "your connection, or download it and pass a local path"
        ) from None


def open_picture(source) -> Image.Image:
    """Opens ``source`` (path, URL or array) as an RGB PIL image, fully decoded.

    EXIF orientation is applied; transparent images are composited on white;
    grayscale, palette, 16-bit and CMYK images are converted to RGB; only the
    first frame of an animation is used.
    """
    if isinstance(source, Image.Image):
        img = source
    elif isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
            raise UserError(
                f"image array has shape {source.shape}; expected (rows, cols, 3)"
            )
        if arr.dtype != np.uint8:
            arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
    else:
        path = fetch(str(source))
        try:
            img = Image.open(path)
            img.seek(0)  # first frame of an animated GIF / WebP
            img.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many kinds here
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if "truncated" in reason or isinstance(e, (OSError, SyntaxError)) and \
                    not isinstance(e, Image.UnidentifiedImageError):
                fix = "the file is truncated or damaged; download or export it again"
            else:
                fix = "it is not an image; give a JPEG, PNG, GIF, WebP, BMP or TIFF file"
            raise UserError(f"cannot read image {source!r} ({reason}): {fix}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth failing for
        pass
    return _to_rgb(img)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(np.round(arr * 255.0 / peak), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def target_size(width: int, height: int, img_nrows: int) -> Tuple[int, int]:
    """Output ``(rows, cols)``: ``img_nrows`` high, keras.io's aspect rule."""
    return int(img_nrows), int(width * img_nrows / height)


def resize_picture(img: Image.Image, size: Tuple[int, int], interpolation="nearest"):
    """Resizes to ``size = (rows, cols)`` like ``keras.utils.load_img``.

    With ``nearest`` this is bit-identical to the tutorial's
    ``load_img(path, target_size=size)``.
    """
    rows, cols = size
    if img.size != (cols, rows):
        img = img.resize((cols, rows), _RESAMPLE[interpolation])
    return img


def load_image(source, size: Optional[Tuple[int, int]] = None, interpolation="nearest"):
    """Loads ``source`` as a picture, resized to ``size = (rows, cols)`` if given.

    Returns: ``uint8`` array of shape ``(rows, cols, 3)``, RGB.
    """
    img = open_picture(source)
    if size is not None:
        if min(size) < MIN_SIDE:
            raise UserError(
                f"image {describe(source)} would be {size[0]}x{size[1]} pixels; VGG needs "
                f"at least {MIN_SIDE} per side: raise --img_nrows or use a less "
                "elongated image"
            )
        img = resize_picture(img, size, interpolation)
    return np.asarray(img, dtype=np.uint8).copy()


def describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return "array"


def preprocess_image(picture) -> np.ndarray:
    """Turns an RGB picture into a network image.

    Args:
      picture: array ``(rows, cols, 3)`` or ``(1, rows, cols, 3)``, RGB, values
        in 0..255 (any numeric dtype).

    Returns:
      ``float32`` array ``(1, rows, cols, 3)``: channels reordered RGB->BGR and
      the ImageNet means (B 103.939, G 116.779, R 123.68) subtracted, exactly
      ``keras.applications.vgg19.preprocess_input``.
    """
    x = np.asarray(picture, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    x = x[..., ::-1] - np.asarray(IMAGENET_MEAN_BGR, dtype=np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def deprocess_image(x, mean: Sequence[float] = IMAGENET_MEAN_BGR) -> np.ndarray:
    """Turns a network image back into an RGB picture.

    Args:
      x: array or tensor ``(1, rows, cols, 3)`` or ``(rows, cols, 3)``, BGR,
        mean-centred.
      mean: the offsets added back to channels 0, 1, 2 (B, G, R) before the
        channels are reversed; the ImageNet means undo ``preprocess_image``.

    Returns:
      ``uint8`` array ``(rows, cols, 3)``, RGB.

    Departure from keras.io: the tutorial truncates (``astype("uint8")``);
    this rounds to the nearest integer first, so that preprocess -> deprocess
    returns the original pixels exactly (truncation turns 254.99998 into 254).
    """
    x = np.array(x, dtype=np.float32)
    if x.ndim == 4:
        x = x[0]
    x = x + np.asarray(mean, dtype=np.float32)
    x = x[..., ::-1]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def encode_png(picture: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file and a rename.

    A reader never sees a partial file; if writing fails, ``path`` keeps its
    previous content (or stays absent) and the temporary file is removed.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates the file private (0600); give it the usual mode.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_image(path: str, picture: np.ndarray) -> None:
    """Saves an RGB ``uint8`` picture atomically; the format follows the suffix."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".") or "png"
    fmt = {"jpg": "JPEG", "jpeg": "JPEG"}.get(fmt, fmt.upper())
    buf = io.BytesIO()
    Image.fromarray(np.asarray(picture, dtype=np.uint8)).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())
