"""Pictures: open, resize, and the colour transforms.

NumPy and Pillow only; nothing here knows the settings or the network, and
nothing here writes a file (``output.files.save_image`` saves pictures).

Layouts: a *picture* is an array ``(rows, cols, 3)`` in RGB order, values
0..255 (``uint8`` when loaded or saved, ``float32`` in the colour transforms).
Colour transforms follow Gatys, Bethge, Hertzmann and Shechtman, "Controlling
Perceptual Factors in Neural Style Transfer" (CVPR 2017), section 5:

* ``luminance_only`` / ``restore_chroma``: transfer the style on the
  luminance channel only (YIQ, as in the paper), then put the content's
  chroma back;
* ``match_color_statistics``: recolour the style with a linear map so the
  mean and covariance of its RGB pixels equal the content's (the symmetric
  map ``A = Sigma_c^(1/2) Sigma_s^(-1/2)``, one of the paper's two choices).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import urllib.parse
import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps

from nst_keras.errors import UserError

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
    import keras  # late: only a URL needs Keras' download cache

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
        img = resize_picture(img, size, interpolation)
    return np.asarray(img, dtype=np.uint8).copy()


def load_mask(source, size: Tuple[int, int], what: str = "mask") -> np.ndarray:
    """A region mask at ``size = (rows, cols)``: ``float32 (1, rows, cols, 1)`` in 0..1.

    ``source``: a path, URL or array (uint8 0..255, or floats 0..1; grey or RGB,
    whose channels are averaged); white is 1.  ``UserError`` for one that is
    not an image or is black everywhere.
    """
    if isinstance(source, np.ndarray) and source.dtype != np.uint8:
        arr = np.asarray(source, np.float32)
        arr = arr.mean(axis=-1) if arr.ndim == 3 else arr.reshape(arr.shape[-2:]) \
            if arr.ndim == 4 else arr
        if arr.ndim != 2:
            raise UserError(f"{what} array has shape {source.shape}; expected (rows, cols)")
        picture = Image.fromarray(np.clip(arr * 255.0, 0, 255).astype(np.uint8))
    else:
        picture = open_picture(source).convert("L")
    rows, cols = size
    values = np.asarray(picture.resize((cols, rows), Image.BILINEAR), np.float32) / 255.0
    if not values.max() > 0.0:
        raise UserError(f"{what} {describe(source)} is black everywhere: that style would "
                        "apply nowhere; paint white where it should apply")
    return values[None, :, :, None]


def describe(source) -> str:
    """How an image source is named in messages: its quoted path, or ``array``."""
    if isinstance(source, (str, os.PathLike)):
        return repr(str(source))
    return "array"


def noise_picture(rows: int, cols: int, seed: int) -> np.ndarray:
    """Seeded white noise, uniform over 0..255 per channel: ``float32 (rows, cols, 3)``."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, size=(rows, cols, 3)).astype(np.float32)


# --------------------------------------------------------------------------
# Colour transforms

# NTSC RGB -> YIQ (Y in 0..255 for RGB in 0..255).
RGB_TO_YIQ = np.array(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ],
    dtype=np.float64,
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)

def rgb_to_yiq(picture) -> np.ndarray:
    """``(rows, cols, 3)`` RGB -> float64 YIQ."""
    return np.asarray(picture, np.float64) @ RGB_TO_YIQ.T


def yiq_to_rgb(yiq) -> np.ndarray:
    """float YIQ -> float64 RGB (not clipped)."""
    return np.asarray(yiq, np.float64) @ YIQ_TO_RGB.T


def luminance_only(picture, reference=None) -> np.ndarray:
    """A grey picture holding ``picture``'s luminance in all three channels.

    With ``reference`` given, the luminance is first shifted and scaled to the
    reference's luminance mean and standard deviation (the paper's luminance
    histogram matching of the style to the content).
    """
    y = rgb_to_yiq(picture)[..., 0]
    if reference is not None:
        ref = rgb_to_yiq(reference)[..., 0]
        y = (y - y.mean()) * (ref.std() / max(y.std(), 1e-6)) + ref.mean()
    y = np.clip(y, 0.0, 255.0)
    return np.repeat(y[..., None], 3, axis=-1).astype(np.float32)


def restore_chroma(result, content) -> np.ndarray:
    """Luminance of ``result`` with the I, Q channels of ``content`` (same size).

    Returns float32 RGB, clipped to 0..255.
    """
    out = rgb_to_yiq(result)
    out[..., 1:] = rgb_to_yiq(content)[..., 1:]
    return np.clip(yiq_to_rgb(out), 0.0, 255.0).astype(np.float32)


def sqrtm_psd(matrix, floor: float = 0.0, inverse: bool = False) -> np.ndarray:
    """The symmetric square root ``M^1/2`` (``inverse``: ``M^-1/2``) of a positive
    semi-definite matrix, in float64, its eigenvalues floored at ``floor`` first
    (``inverse`` needs ``floor > 0``)."""
    sym = (np.asarray(matrix, np.float64) + np.asarray(matrix, np.float64).T) / 2.0
    values, vectors = np.linalg.eigh(sym)
    roots = np.sqrt(np.maximum(values, floor))
    return ((vectors / roots) if inverse else (vectors * roots)) @ vectors.T


def match_color_statistics(style, content) -> np.ndarray:
    """Recolours ``style`` so its RGB mean and covariance equal ``content``'s.

    ``x' = A (x - mu_s) + mu_c`` with ``A = Sigma_c^(1/2) Sigma_s^(-1/2)``.
    Returns float32 RGB clipped to 0..255 (clipping only touches pixels the
    linear map pushes outside the valid range).
    """
    s = np.asarray(style, np.float64).reshape(-1, 3)
    c = np.asarray(content, np.float64).reshape(-1, 3)
    mu_s, mu_c = s.mean(0), c.mean(0)
    cov_s = np.cov(s, rowvar=False) + 1e-3 * np.eye(3)
    cov_c = np.cov(c, rowvar=False) + 1e-3 * np.eye(3)
    a = sqrtm_psd(cov_c, floor=1e-5) @ sqrtm_psd(cov_s, floor=1e-5, inverse=True)
    out = (s - mu_s) @ a.T + mu_c
    out = np.clip(out, 0.0, 255.0)
    return out.reshape(np.shape(style)).astype(np.float32)


def colors_for_loss(mode: str, content, styles):
    """The pictures the losses see under ``--preserve_colors=mode``.

    Returns ``(content, styles)``: unchanged for ``none``, grey luminance
    pictures for ``luminance`` (the style's luminance matched to the
    content's), recoloured styles for ``histogram``.
    """
    if mode == "luminance":
        return (luminance_only(content),
                [luminance_only(s, reference=content) for s in styles])
    if mode == "histogram":
        return content, [match_color_statistics(s, content) for s in styles]
    return content, list(styles)


# --------------------------------------------------------------------------
# Pictures sent as bytes (the web page's uploads): checked, then decoded

IMAGE_KINDS = "a JPEG, PNG, GIF, WebP, BMP or TIFF file"
MASK_ASPECT_SLACK = 0.03  # a mask's width/height may differ this much (relative) from the photo's
_SUFFIXES = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp",
             "BMP": ".bmp", "TIFF": ".tif"}


def size_text(n: int) -> str:
    """``25 MB``, ``1.5 MB`` or ``4000 bytes``."""
    return f"{n / 2 ** 20:.3g} MB" if n >= 2 ** 20 else f"{n} bytes"


def decode_picture(data: bytes, label: str, max_bytes: int, max_pixels: int,
                   min_side: int = 1) -> np.ndarray:
    """The RGB ``uint8`` array of the picture file in ``data`` (``open_picture``'s
    conversions); ``UserError`` naming it ``label`` (``the content photo (a.jpg)``)
    if it is unusable.

    Its bytes are checked against ``max_bytes`` and its size, read from the
    header, against ``max_pixels`` (and Pillow's decompression-bomb check)
    before any pixel is decoded; each side must have ``min_side`` pixels.
    """
    if not data:
        raise UserError(f"{label} is empty; choose a picture file")
    if len(data) > max_bytes:
        raise UserError(f"{label} is {size_text(len(data))}; the limit is {size_text(max_bytes)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            picture = Image.open(io.BytesIO(data))
            width, height = picture.size
            if width * height > max_pixels:
                raise UserError(f"{label} is {width}x{height} pixels, over the limit of "
                                f"{max_pixels:,} pixels; use a smaller picture")
            picture.seek(0)  # first frame of an animated GIF / WebP
            picture.load()
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(f"{label} has too many pixels (over {max_pixels:,}); use a smaller "
                        "picture") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds here
        if isinstance(e, Image.UnidentifiedImageError):
            raise UserError(f"cannot read {label}: it is not an image; give "
                            f"{IMAGE_KINDS}") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read {label}: the file is truncated or damaged ({reason}); "
                        "export it again") from None
    array = np.asarray(open_picture(picture))
    if min(array.shape[:2]) < min_side:
        raise UserError(f"{label} is {array.shape[1]}x{array.shape[0]} pixels; give a "
                        f"picture at least {min_side} pixels on each side")
    return array


def picture_suffix(data: bytes) -> str:
    """The file suffix of the picture file in ``data`` by its format (``.jpg``,
    ``.png``, ...; ``.img`` for another format or none)."""
    try:
        with Image.open(io.BytesIO(data)) as picture:
            kind = picture.format
    except Exception:  # noqa: BLE001 - any unreadable file has no suffix of its own
        kind = None
    return _SUFFIXES.get(kind, ".img")


def check_mask(grey: np.ndarray, label: str, photo_shape=None,
               fix: str = "paint white where it should apply") -> None:
    """``UserError`` unless the grey mask ``grey`` (``uint8`` or 0..1 floats, rows x
    cols) is somewhere non-black and, with ``photo_shape`` given, of the photo's
    shape (aspect ratio within ``MASK_ASPECT_SLACK`` and a pixel; any size: masks are
    resized); ``fix`` ends the black-everywhere message."""
    rows, cols = np.shape(grey)[:2]
    if photo_shape is not None:
        photo_rows, photo_cols = photo_shape[:2]
        aspect, photo_aspect = cols / rows, photo_cols / photo_rows
        if abs(aspect - photo_aspect) > MASK_ASPECT_SLACK * photo_aspect + 1.0 / min(rows, cols):
            raise UserError(f"{label} is {cols}x{rows} pixels, not the photo's shape "
                            f"({photo_cols}x{photo_rows}); paint the photo again")
    if not np.max(grey) > 0:
        raise UserError(f"{label} is black everywhere: that style would apply nowhere; {fix}")
