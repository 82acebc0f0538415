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
