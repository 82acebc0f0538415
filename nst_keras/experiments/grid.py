"""Captioned picture grids built with Pillow (captions drawn with ``ImageDraw``)."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def _font(size: int):
    try:  # Pillow >= 10.1 scales its built-in font when FreeType is present.
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> List[str]:
    """Splits ``text`` at newlines, then at commas/spaces to fit ``width`` pixels."""
    lines: List[str] = []
    for paragraph in str(text).split("\n"):
        current = ""
        for token in _tokens(paragraph):
            trial = current + token
            if current and draw.textlength(trial.rstrip(), font=font) > width:
                lines.append(current.rstrip())
                current = token.lstrip()
            else:
                current = trial
        lines.append(current.rstrip())
    return lines


def _tokens(text: str) -> List[str]:
    out, token = [], ""
    for ch in text:
        token += ch
        if ch in ", ;/":
            out.append(token)
            token = ""
    if token:
        out.append(token)
    return out


def make_grid(
    panels: Sequence[np.ndarray],
    captions: Sequence[str],
    columns: Optional[int] = None,
    pad: int = 4,
    font_size: Optional[int] = None,
) -> np.ndarray:
    """Lays pictures out in a grid with a caption strip under each.

    Args:
      panels: ``uint8 (rows, cols, 3)`` RGB pictures; each cell is as large as
        the largest panel, smaller panels are centred in it.
      captions: one caption per panel (``\\n`` starts a new line; long lines
        are wrapped at commas and spaces to the cell width).
      columns: panels per row (default: all in one row).
      pad: white border between and around cells, in pixels.
      font_size: caption font size (default: about 1/14 of the cell width,
        between 10 and 22).

    Returns:
      ``uint8 (height, width, 3)`` RGB picture with
      ``width = columns * (cell_w + pad) + pad`` and
      ``height = rows * (cell_h + caption_h + pad) + pad``.
    """
    if len(panels) != len(captions):
        raise ValueError("one caption per panel is needed")
    if not panels:
        raise ValueError("no panels")
    columns = len(panels) if columns is None else max(1, min(int(columns), len(panels)))
    n_rows = -(-len(panels) // columns)
    cell_h = max(int(p.shape[0]) for p in panels)
    cell_w = max(int(p.shape[1]) for p in panels)
    if font_size is None:
        font_size = int(min(22, max(10, cell_w // 14)))
    font = _font(font_size)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(scratch, c, font, cell_w) for c in captions]
    ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (font_size, 2)
    line_h = ascent + descent + 2
    caption_h = max(len(lines) for lines in wrapped) * line_h + 4
    width = columns * (cell_w + pad) + pad
    height = n_rows * (cell_h + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (panel, lines) in enumerate(zip(panels, wrapped)):
        r, c = divmod(i, columns)
        x0 = pad + c * (cell_w + pad)
        y0 = pad + r * (cell_h + caption_h + pad)
        pic = Image.fromarray(np.asarray(panel, dtype=np.uint8))
        canvas.paste(pic, (x0 + (cell_w - pic.width) // 2, y0 + (cell_h - pic.height) // 2))
        y = y0 + cell_h + 3
        for line in lines:
            w = draw.textlength(line, font=font)
            draw.text((x0 + max(0, (cell_w - w) / 2), y), line, fill=TEXT, font=font)
            y += line_h
    return np.asarray(canvas, dtype=np.uint8).copy()
