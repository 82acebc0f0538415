"""A line plot drawn with Pillow: ``loss.png`` without a plotting library.

One figure kind: a few named curves against one x axis, the y axis linear or
logarithmic, a grid, tick labels, axis labels and a legend.  Drawn at twice
the size and halved (anti-aliased lines and text), in about a hundredth of a
second, so a batch item or a film chunk pays almost nothing for its plot.
"""

from __future__ import annotations

import io
import math
from typing import List, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFont

# matplotlib's "tab10" colours, in its order: the curves keep their familiar look.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
SCALE = 2  # drawn at twice the size, then halved


class Series:
    """One curve: its legend label, x and y values, colour and line width (pixels)."""

    def __init__(self, label: str, xs: Sequence[float], ys: Sequence[float],
                 colour: str, width: float = 1.5):
        self.label, self.xs, self.ys = label, list(xs), list(ys)
        self.colour, self.width = colour, width


def nice_step(span: float, count: int = 6) -> float:
    """A 1, 2 or 5 times a power of ten that cuts ``span`` into about ``count`` parts."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def linear_ticks(lo: float, hi: float) -> List[float]:
    step = nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    k = first
    while k * step <= hi + step * 1e-9:
        ticks.append(round(k * step, 12))
        k += 1
    return ticks


def log_ticks(lo: float, hi: float) -> List[float]:
    """Tick positions in log10 units: whole decades, or 1-2-5 within one or two."""
    first, last = math.floor(lo), math.ceil(hi)
    if last - first <= 2:
        ticks = [d + math.log10(m) for d in range(first, last + 1) for m in (1, 2, 5)]
    else:
        every = max(1, math.ceil((last - first) / 8))
        ticks = [float(d) for d in range(first, last + 1) if d % every == 0]
    return [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]


def along(points: List[Tuple[float, float]], count: int = 8) -> List[Tuple[float, float]]:
    """The points of a polyline and ``count`` more on each of its segments."""
    out = list(points[:1])
    for (a, b), (c, d) in zip(points, points[1:]):
        out += [(a + (c - a) * k / count, b + (d - b) * k / count) for k in range(1, count + 1)]
    return out


def font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: one bitmap size
        return ImageFont.load_default()


class Frame:
    """Where values land: the plot area (pixels, drawn scale) and the axes' spans."""

    def __init__(self, series: Sequence[Series], box: Tuple[int, int, int, int], log_y: bool):
        self.left, self.top, self.right, self.bottom = box
        self.log_y = log_y
        xs = [x for c in series for x, y in zip(c.xs, c.ys) if self.keep(y)]
        ys = [self.ty(y) for c in series for y in c.ys if self.keep(y)]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        y0, y1 = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if x1 - x0 <= 0:
            x0, x1 = x0 - 0.5, x1 + 0.5
        if y1 - y0 <= 0:
            pad = 0.5 if log_y else max(abs(y0) * 0.1, 0.5)
            y0, y1 = y0 - pad, y1 + pad
        pad = (y1 - y0) * 0.05
        self.x0, self.x1, self.y0, self.y1 = x0, x1, y0 - pad, y1 + pad

    def keep(self, y) -> bool:
        return y is not None and math.isfinite(y) and (y > 0 or not self.log_y)

    def ty(self, y: float) -> float:
        return math.log10(y) if self.log_y else y

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)


INK, GRID = (40, 40, 40), (225, 225, 225)


def draw_axes(image: Image.Image, f: Frame, xlabel: str, ylabel: str) -> None:
    """The grid, ticks and their labels, the frame and the axis labels."""
    s, draw = SCALE, ImageDraw.Draw(image)
    small, label_font = font(11 * s), font(12 * s)
    for t in (log_ticks(f.y0, f.y1) if f.log_y else linear_ticks(f.y0, f.y1)):
        y = f.py(t)
        draw.line([(f.left, y), (f.right, y)], fill=GRID, width=s)
        draw.line([(f.left - 4 * s, y), (f.left, y)], fill=INK, width=s)
        text = f"{10 ** t:.3g}" if f.log_y else f"{t:g}"
        draw.text((f.left - 7 * s, y), text, fill=INK, font=small, anchor="rm")
    for t in linear_ticks(f.x0, f.x1):
        x = f.px(t)
        draw.line([(x, f.top), (x, f.bottom)], fill=GRID, width=s)
        draw.line([(x, f.bottom), (x, f.bottom + 4 * s)], fill=INK, width=s)
        draw.text((x, f.bottom + 7 * s), f"{t:g}", fill=INK, font=small, anchor="mt")
    draw.rectangle([f.left, f.top, f.right, f.bottom], outline=INK, width=s)
    draw.text(((f.left + f.right) / 2, image.height - 6 * s), xlabel, fill=INK,
              font=label_font, anchor="md")
    if ylabel:  # written across, then turned upright
        side = Image.new("RGB", (f.bottom - f.top, 18 * s), "white")
        ImageDraw.Draw(side).text(((f.bottom - f.top) / 2, 9 * s), ylabel, fill=INK,
                                  font=label_font, anchor="mm")
        image.paste(side.rotate(90, expand=True), (4 * s, f.top))


def draw_curves(draw: ImageDraw.ImageDraw, f: Frame,
                series: Sequence[Series]) -> List[Tuple[float, float]]:
    """Each curve, broken where a point is left out; returns points along them."""
    drawn: List[Tuple[float, float]] = []
    for c in series:
        width = max(1, round(c.width * SCALE))
        run: List[Tuple[float, float]] = []
        for x, y in list(zip(c.xs, c.ys)) + [(None, None)]:
            if x is not None and f.keep(y):
                run.append((f.px(x), f.py(f.ty(y))))
                continue
            if len(run) == 1:
                (a, b), r = run[0], c.width * SCALE
                draw.ellipse([a - r, b - r, a + r, b + r], fill=c.colour)
            elif run:
                draw.line(run, fill=c.colour, width=width, joint="curve")
            drawn += along(run)
            run = []
    return drawn


def draw_legend(draw: ImageDraw.ImageDraw, f: Frame, series: Sequence[Series],
                drawn: List[Tuple[float, float]]) -> None:
    """The labels beside their lines, in the corner that hides the fewest points."""
    s, small = SCALE, font(11 * SCALE)
    line_h = 17 * s
    box_w = max(draw.textlength(c.label, font=small) for c in series) + 40 * s
    box_h = line_h * len(series) + 8 * s
    corners = [(f.right - box_w - 8 * s, f.top + 8 * s), (f.left + 8 * s, f.top + 8 * s),
               (f.right - box_w - 8 * s, f.bottom - box_h - 8 * s),
               (f.left + 8 * s, f.bottom - box_h - 8 * s)]
    bx, by = min(corners, key=lambda c: sum(
        c[0] <= a <= c[0] + box_w and c[1] <= b <= c[1] + box_h for a, b in drawn))
    draw.rectangle([bx, by, bx + box_w, by + box_h], fill="white", outline=(200, 200, 200),
                   width=s)
    for i, c in enumerate(series):
        y = by + 4 * s + line_h * (i + 0.5)
        draw.line([(bx + 6 * s, y), (bx + 26 * s, y)], fill=c.colour,
                  width=max(1, round(c.width * s)))
        draw.text((bx + 32 * s, y), c.label, fill=INK, font=small, anchor="lm")


def line_plot(series: Sequence[Series], size: Tuple[int, int] = (700, 420),
              log_y: bool = False, xlabel: str = "", ylabel: str = "") -> Image.Image:
    """The figure as an RGB image of ``size`` (width, height).

    Points that are not finite (or not positive on a log axis) are left out and
    break their curve.  The axes span the plotted points; with none the plot
    has empty axes.
    """
    s = SCALE
    image = Image.new("RGB", (size[0] * s, size[1] * s), "white")
    frame = Frame(series, (78 * s, 12 * s, image.width - 18 * s, image.height - 48 * s), log_y)
    draw_axes(image, frame, xlabel, ylabel)
    draw = ImageDraw.Draw(image)
    drawn = draw_curves(draw, frame, series)
    if series:
        draw_legend(draw, frame, series, drawn)
    return image.reduce(SCALE)  # 2 x 2 averages: a twelfth of a Lanczos resize's time


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=3)  # zlib's 6: 50 % longer, 15 % smaller
    return buf.getvalue()
