"""Optical flow between frames, warping, and where the flow can be trusted.

NumPy and OpenCV only.  Layouts: a *picture* is ``(rows, cols, 3)`` RGB;
a *flow* is ``float32 (rows, cols, 2)`` of ``(dx, dy)`` in pixels, and
``flow = optical_flow(a, b)`` says that the pixel ``p`` of ``a`` is seen at
``p + flow(p)`` in ``b``.  ``warp(b, flow)`` pulls ``b`` back into ``a``'s
frame: ``warp(b, flow)(p) = b(p + flow(p))`` (bilinear).

To carry the stylised previous frame into the current one (Ruder, Dosovitskiy
and Brox, "Artistic style transfer for videos", 2016) the current frame's
pixels are followed back: ``backward = optical_flow(current, previous)``,
``warp(previous_stylised, backward)``.  ``consistency_weights`` marks the
pixels where that is wrong, with the paper's two criteria:

* disocclusion: following ``backward`` and then the forward flow
  ``forward = optical_flow(previous, current)`` should come back to the same
  place: ``|w~ + w|^2 > 0.01 (|w~|^2 + |w|^2) + 0.5`` (``w`` the backward
  flow, ``w~`` the forward flow warped into the current frame) is occluded;
* motion boundaries: ``|grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002``.

Both get weight 0, every other pixel 1.
"""

from __future__ import annotations

from typing import List, Sequence

import cv2
import numpy as np

from nst_keras import constants

METHODS = constants.FLOWS  # the --flow choices


def _gray(picture) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim == 2:
        return np.ascontiguousarray(picture, np.uint8)
    rgb = np.clip(np.round(picture), 0, 255).astype(np.uint8)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def optical_flow(a, b, method: str = "dis") -> np.ndarray:
    """Dense flow from picture ``a`` to picture ``b`` (``(rows, cols, 2)``, float32).

    ``dis``: OpenCV's DIS optical flow (medium preset), fast and good at
    large motions; ``dis_fast``: its fast preset (about 3 times quicker;
    the same flicker of a film through a network with ``--blend_previous``);
    ``farneback``: Farnebäck's polynomial expansion.
    """
    ga, gb = _gray(a), _gray(b)
    if method in ("dis", "dis_fast"):
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM if method == "dis"
                                        else cv2.DISOPTICAL_FLOW_PRESET_FAST)
        flow = dis.calc(ga, gb, None)
    elif method == "farneback":
        flow = cv2.calcOpticalFlowFarneback(ga, gb, None, pyr_scale=0.5, levels=4,
                                            winsize=15, iterations=3, poly_n=5,
                                            poly_sigma=1.2, flags=0)
    else:
        raise ValueError(f"unknown flow method {method!r}; use one of {METHODS}")
    return np.asarray(flow, np.float32)


def warp(image, flow) -> np.ndarray:
    """``image(p + flow(p))`` for every pixel ``p`` (bilinear, edges repeated).

    ``image``: ``(rows, cols)`` or ``(rows, cols, C)``; returns float32 of its shape.
    """
    image = np.asarray(image, np.float32)
    rows, cols = flow.shape[:2]
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    map_x = xs + flow[..., 0]
    map_y = ys + flow[..., 1]
    out = cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape).astype(np.float32)


def outside(flow) -> np.ndarray:
    """True where ``p + flow(p)`` leaves the picture (nothing to warp from)."""
    rows, cols = flow.shape[:2]
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    x, y = xs + flow[..., 0], ys + flow[..., 1]
    return (x < 0) | (x > cols - 1) | (y < 0) | (y > rows - 1)


def consistency_weights(backward, forward) -> np.ndarray:
    """Per-pixel weights ``c`` (float32 ``(rows, cols)``, 0 or 1) of the current frame.

    ``backward``: flow current -> previous; ``forward``: previous -> current.
    0 where the forward-backward check finds a disocclusion, on motion
    boundaries of ``backward``, and where ``backward`` points outside the
    previous frame (module docstring).
    """
    w = np.asarray(backward, np.float32)
    w_tilde = warp(forward, w)
    round_trip = np.sum((w_tilde + w) ** 2, axis=-1)
    occluded = round_trip > 0.01 * (np.sum(w_tilde ** 2, -1) + np.sum(w ** 2, -1)) + 0.5
    du_dy, du_dx = np.gradient(w[..., 0])
    dv_dy, dv_dx = np.gradient(w[..., 1])
    gradient = du_dx ** 2 + du_dy ** 2 + dv_dx ** 2 + dv_dy ** 2
    boundary = gradient > 0.01 * np.sum(w ** 2, -1) + 0.002
    return (~(occluded | boundary | outside(w))).astype(np.float32)


def long_term_weights(weights: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Ruder et al.'s long-term weights from the plain ``c`` of frames 1, 2, ... back.

    ``weights[j]`` is ``c`` of the ``j``-th previous frame used, nearest first.
    A pixel counts only for the nearest previous frame that sees it:
    ``c_long_j = max(c_j - sum_{k < j} c_k, 0)``.
    """
    out, seen = [], None
    for c in weights:
        c = np.asarray(c, np.float32)
        out.append(c if seen is None else np.maximum(c - seen, 0.0))
        seen = c if seen is None else seen + c
    return out


def motion(current, previous, method: str = "dis"):
    """``(backward, weights)``: the flow from ``current`` back to ``previous``
    and where it holds (``consistency_weights``), for ``carry``."""
    backward = optical_flow(current, previous, method)
    forward = optical_flow(previous, current, method)
    return backward, consistency_weights(backward, forward)


def carry(picture, previous_picture, moved, share: float) -> np.ndarray:
    """``picture`` with ``share`` of ``previous_picture`` carried along the flow
    where it holds: ``picture + share * c * (warp(previous, backward) - picture)``
    (``moved``: ``motion``'s pair).  float32 of ``picture``'s shape; where the
    flow fails (``c = 0``) the picture is its own."""
    picture = np.asarray(picture, np.float32)
    backward, weights = moved
    carried = warp(previous_picture, backward)
    return picture + float(share) * weights[..., None] * (carried - picture)
