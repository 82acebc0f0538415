"""Keeping the content's colours (Gatys, Bethge, Hertzmann, Shechtman 2017).

"Controlling Perceptual Factors in Neural Style Transfer" (CVPR 2017),
section 5, gives two ways to transfer a style without its colours:

* ``luminance``: transfer the style on the luminance channel only.  The
  style's luminance is first matched to the content's mean and standard
  deviation, both inputs become grey (luminance in all three RGB channels),
  and the result's luminance is combined with the content's chroma.  YIQ is
  the colour space (the paper uses YIQ).
* ``histogram``: before the transfer, recolour the style image with a linear
  map so that the mean and covariance of its RGB pixels equal the content's
  (the paper's colour-histogram matching; the map here is the symmetric one,
  ``A = Sigma_c^(1/2) Sigma_s^(-1/2)``, which the paper names as one of two
  choices, the other being Cholesky factors).

Pictures here are float or ``uint8`` arrays ``(rows, cols, 3)``, RGB, 0..255.
"""

from __future__ import annotations

import numpy as np

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

MODES = ("none", "luminance", "histogram")


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


def _sqrt_and_inverse_sqrt(cov):
    values, vectors = np.linalg.eigh(cov)
    values = np.maximum(values, 1e-5)
    root = (vectors * np.sqrt(values)) @ vectors.T
    inv_root = (vectors / np.sqrt(values)) @ vectors.T
    return root, inv_root


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
    root_c, _ = _sqrt_and_inverse_sqrt(cov_c)
    _, inv_root_s = _sqrt_and_inverse_sqrt(cov_s)
    a = root_c @ inv_root_s
    out = (s - mu_s) @ a.T + mu_c
    out = np.clip(out, 0.0, 255.0)
    return out.reshape(np.shape(style)).astype(np.float32)
