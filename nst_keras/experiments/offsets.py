"""Deprocess mean offsets: one network image deprocessed with several B,G,R triples.

``deprocess_image`` adds three offsets to the B, G, R channels of the
mean-centred network image, reverses the channels and clips to 0..255.  The
offsets that undo ``preprocess_image`` are the ImageNet means; this module
measures what other triples do to the same tensor.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

from nst_keras import fields, settings
from nst_keras.engine import vgg

Triple = Tuple[float, float, float]

# Names of the default triples (settings.DEFAULT_DEPROCESS_OFFSETS, in its
# order), used in captions.
KNOWN_NAMES = dict(zip(settings.DEFAULT_DEPROCESS_OFFSETS, (
    "ImageNet means", "write-up variant", "means in RGB order", "zeros")))


def offsets_name(offsets: Triple) -> str:
    key = tuple(round(float(v), 6) for v in offsets)
    for known, name in KNOWN_NAMES.items():
        if tuple(round(v, 6) for v in known) == key:
            return name
    return ""


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 pictures (``inf`` when identical)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def offsets_report(tensor, offsets_list: Sequence[Triple]) -> List[Dict]:
    """Deprocesses ``tensor`` with each triple and measures the pictures.

    Args:
      tensor: network image ``(1, rows, cols, 3)`` (BGR, mean-centred).
      offsets_list: B,G,R triples.

    Returns:
      One dict per triple, JSON-ready:

      * ``offsets``: the triple as given (B, G, R);
      * ``name``: a short name for the known triples, else ``""``;
      * ``mean_rgb``: mean R, G, B of the deprocessed picture (0..255);
      * ``mean_shift_rgb``: ``mean_rgb`` minus that of the ImageNet-means
        picture (per channel);
      * ``clipped_low_fraction_rgb`` / ``clipped_high_fraction_rgb``: per
        channel, the fraction of pixels whose rounded value ``x + offset``
        fell below 0 / above 255 and was clipped;
      * ``clipped_fraction_rgb``: their sum;
      * ``psnr_vs_imagenet``: PSNR (dB) against the ImageNet-means picture;
        ``null`` (infinite) when the pictures are identical;
      * ``identical_to_imagenet``: whether they are.
    """
    x = np.array(tensor, dtype=np.float32)
    if x.ndim == 4:
        x = x[0]
    reference = vgg.deprocess_image(x)
    report = []
    for offsets in offsets_list:
        offsets = tuple(float(v) for v in offsets)
        picture = vgg.deprocess_image(x, offsets)
        # The values deprocess_image clips, computed the same way (float32).
        raw = np.round((x + np.asarray(offsets, dtype=np.float32))[..., ::-1])
        low = np.mean(raw < 0, axis=(0, 1))
        high = np.mean(raw > 255, axis=(0, 1))
        mean = picture.astype(np.float64).mean(axis=(0, 1))
        shift = mean - reference.astype(np.float64).mean(axis=(0, 1))
        value = psnr(picture, reference)
        report.append({
            "offsets": list(offsets),
            "name": offsets_name(offsets),
            "mean_rgb": [round(float(v), 4) for v in mean],
            "mean_shift_rgb": [round(float(v), 4) for v in shift],
            "clipped_low_fraction_rgb": [round(float(v), 6) for v in low],
            "clipped_high_fraction_rgb": [round(float(v), 6) for v in high],
            "clipped_fraction_rgb": [round(float(v), 6) for v in low + high],
            "psnr_vs_imagenet": None if math.isinf(value) else round(value, 4),
            "identical_to_imagenet": bool(math.isinf(value)),
        })
    return report


def offsets_panels(tensor, offsets_list: Sequence[Triple]):
    """``(pictures, captions)`` for the grid: one per triple."""
    pictures, captions = [], []
    for offsets in offsets_list:
        pictures.append(vgg.deprocess_image(tensor, offsets))
        name = offsets_name(offsets)
        captions.append(fields.format_offsets([offsets]) + (f"\n{name}" if name else ""))
    return pictures, captions
