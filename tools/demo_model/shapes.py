"""Drawn-shapes data set for otter's demo model: 128x128 RGB images with captions and labels.

Every sample is one or two flat-coloured shapes on a plain background. Layouts are drawn in a
64x64 coordinate system (v1's image size; the judge still reads 64x64), rendered on a 256x256
grid and box-filtered down to the image size (anti-aliasing): a 64x64 render is exactly v1's, a
128x128 one has the same shapes at twice the resolution. The caption mentions a random subset of the attributes (shape
always; colour, background, size and position only sometimes), so the model must learn that an
attribute left out of the caption may take any value -- which is what makes classifier-free
guidance measurable on it.

Deterministic: `samples(seed)` is an infinite iterator whose n-th item depends only on `seed` and n.
Only numpy is needed (the judge and the tests import this file without torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

IMAGE_SIZE = 128  # what the model is trained on (v1: 64)
LAYOUT_SIZE = 64  # coordinates of CELL_CENTERS, RADIUS and JITTER; also the judge's input size
FINE = 256  # side of the grid coverage is computed on

# Hues far apart in RGB so a nearest-palette judge separates them even after a blurry decoder.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 40),
    "green": (40, 175, 60),
    "blue": (40, 80, 225),
    "purple": (145, 55, 195),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLORS = list(PALETTE)
SHAPES = ["circle", "square", "triangle", "star", "ring"]
SIZES = ["small", "large"]
# Cell names of the 3x3 grid, row by row; CELL_CENTERS gives the pixel centre of each cell.
POSITIONS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
CELL_CENTERS = {p: (16 + 16 * (i % 3), 16 + 16 * (i // 3)) for i, p in enumerate(POSITIONS)}
POSITION_PHRASES = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}
RADIUS = {"small": (7.0, 8.5), "large": (13.0, 15.0)}  # half-size range in pixels
JITTER = 1.5  # pixels of random offset from the cell centre


@dataclass
class Sample:
    image: np.ndarray  # [size, size, 3] uint8 (IMAGE_SIZE unless asked otherwise)
    caption: str
    shapes: list[str]
    colors: list[str]
    background: str
    sizes: list[str]
    positions: list[str]
    mentioned: dict = field(default_factory=dict)  # which attributes the caption states


# ---------------------------------------------------------------- geometry

def _polygon_mask(x: np.ndarray, y: np.ndarray, vx: np.ndarray, vy: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test for all points (x, y) at once."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(vx)
    for i in range(n):
        x1, y1, x2, y2 = vx[i], vy[i], vx[(i + 1) % n], vy[(i + 1) % n]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (x < xint)
    return inside


def shape_mask(shape: str, cx: float, cy: float, r: float, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Boolean mask of `shape` centred at (cx, cy) with half-size r, sampled at points (x, y)."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "square":
        s = 0.85 * r  # similar area to the circle, so size words mean the same for every shape
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if shape == "triangle":
        # Upright equilateral triangle, centroid lowered a little so it fills its cell evenly.
        ang = np.deg2rad([-90.0, 30.0, 150.0])
        rr = 1.1 * r
        return _polygon_mask(x, y, cx + rr * np.cos(ang), cy + 0.15 * r + rr * np.sin(ang))
    if shape == "star":
        ang = np.deg2rad(-90.0 + 36.0 * np.arange(10))
        rad = np.where(np.arange(10) % 2 == 0, 1.1 * r, 0.45 * r)
        return _polygon_mask(x, y, cx + rad * np.cos(ang), cy + rad * np.sin(ang))
    raise ValueError(f"unknown shape '{shape}' (known: {SHAPES})")


_S = FINE // LAYOUT_SIZE  # fine-grid points per layout pixel
_FINE_AXIS = (np.arange(FINE) + 0.5) / _S
_FX, _FY = np.meshgrid(_FINE_AXIS, _FINE_AXIS)


def render(shapes, colors, background, geometry, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draws shapes (list of names) with colours over a background; geometry = [(cx, cy, r), ...]
    in layout pixels. Coverage is computed on the FINE grid and averaged per output pixel, so
    edges are anti-aliased; size must divide FINE."""
    if FINE % size:
        raise ValueError(f"image size {size} must divide {FINE}")
    fine = np.empty(_FX.shape + (3,), dtype=np.float32)
    fine[:] = PALETTE[background]
    s = _S
    for shape, color, (cx, cy, r) in zip(shapes, colors, geometry):
        # Only the shape's bounding box is tested (every shape lies within 1.2 r of its centre).
        x1, y1 = (min(FINE, int((c + 1.2 * r + 1) * s) + 1) for c in (cx, cy))
        y0 = max(0, int((cy - 1.2 * r - 1) * s))
        x0 = max(0, int((cx - 1.2 * r - 1) * s))
        box = (slice(y0, y1), slice(x0, x1))
        fine[box][shape_mask(shape, cx, cy, r, _FX[box], _FY[box])] = PALETTE[color]
    k = FINE // size
    img = fine.reshape(size, k, size, k, 3).mean(axis=(1, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- captions

def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun_phrase(shape, color, size, say_color, say_size) -> str:
    words = ([size] if say_size else []) + ([color] if say_color else []) + [shape]
    return f"{_article(words[0])} {' '.join(words)}"


def caption_for(s: Sample, rng: np.random.Generator) -> tuple[str, dict]:
    """One caption for the sample; which attributes it states is drawn from `rng`."""
    n = len(s.shapes)
    say_color = bool(rng.random() < 0.85)
    say_bg = bool(rng.random() < 0.7)
    say_size = n == 1 and bool(rng.random() < 0.35)
    say_pos = bool(rng.random() < 0.35)
    parts = []
    for i in range(n):
        np_ = _noun_phrase(s.shapes[i], s.colors[i], s.sizes[i], say_color, say_size)
        if say_pos:
            np_ += " " + POSITION_PHRASES[s.positions[i]]
        parts.append(np_)
    things = " and ".join(parts)
    bg = f"{_article(s.background)} {s.background} background"
    if not say_bg:
        text = things
    elif n == 1 and not say_pos and rng.random() < 0.25:
        text = f"{bg} with {things}"
    else:
        text = f"{things} on {bg}"
    mentioned = {"color": say_color, "background": say_bg, "size": say_size, "position": say_pos}
    return text, mentioned


# ---------------------------------------------------------------- sampling

def random_layout(rng: np.random.Generator):
    """Shapes, colours, background, sizes, positions and geometry of one random sample."""
    n = 1 if rng.random() < 0.75 else 2
    background = COLORS[rng.integers(len(COLORS))]
    others = [c for c in COLORS if c != background]
    colors = [others[i] for i in rng.choice(len(others), size=n, replace=False)]
    shapes = [SHAPES[rng.integers(len(SHAPES))] for _ in range(n)]
    if n == 1:
        positions = [POSITIONS[rng.integers(len(POSITIONS))]]
        sizes = [SIZES[rng.integers(2)]]
    else:
        # Two small shapes two cells apart in a row or column (or both): they never touch.
        while True:
            a, b = rng.choice(9, size=2, replace=False)
            if abs(a % 3 - b % 3) == 2 or abs(a // 3 - b // 3) == 2:
                break
        positions = [POSITIONS[a], POSITIONS[b]]
        sizes = ["small", "small"]
    geometry = []
    for pos, size in zip(positions, sizes):
        cx, cy = CELL_CENTERS[pos]
        lo, hi = RADIUS[size]
        geometry.append((cx + rng.uniform(-JITTER, JITTER), cy + rng.uniform(-JITTER, JITTER), rng.uniform(lo, hi)))
    return shapes, colors, background, sizes, positions, geometry


def make_sample(rng: np.random.Generator, draw: bool = True, size: int = IMAGE_SIZE) -> Sample:
    """One sample; with draw=False the image is left empty (captions only, ~100x faster)."""
    shapes, colors, background, sizes, positions, geometry = random_layout(rng)
    image = render(shapes, colors, background, geometry, size) if draw else np.zeros((0, 0, 3), np.uint8)
    s = Sample(image, "", shapes, colors, background, sizes, positions)
    s.caption, s.mentioned = caption_for(s, rng)
    return s


def samples(seed: int, draw: bool = True, size: int = IMAGE_SIZE) -> Iterator[Sample]:
    """Infinite, deterministic stream: item n uses its own generator seeded by (seed, n); the
    layouts and captions do not depend on the image size."""
    n = 0
    while True:
        yield make_sample(np.random.default_rng([seed, n]), draw, size)
        n += 1


def batch(seed: int, count: int, draw: bool = True, size: int = IMAGE_SIZE) -> list[Sample]:
    it = samples(seed, draw, size)
    return [next(it) for _ in range(count)]


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Print captions (and optionally save a contact sheet).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--sheet", help="write an 8-column PNG contact sheet here")
    args = ap.parse_args()
    items = batch(args.seed, args.n)
    for s in items:
        print(s.caption)
    if args.sheet:
        from PIL import Image

        cols = 8
        rows = (len(items) + cols - 1) // cols
        n = IMAGE_SIZE
        sheet = np.zeros((rows * n, cols * n, 3), dtype=np.uint8)
        for i, s in enumerate(items):
            r, c = divmod(i, cols)
            sheet[r * n:(r + 1) * n, c * n:(c + 1) * n] = s.image
        Image.fromarray(sheet).save(args.sheet)
