"""Runs `otter generate` for a batch of prompts and returns the images (numpy uint8 HWC).

One call generates every prompt of the batch from one seed (the noise is one torch.randn of shape
[B,4,16,16] for the bundled model, so with the same prompt list and seed, row i gets the same noise at every guidance
scale). Several prompts per call amortise the model loading.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def find_otter(explicit: str | None = None) -> Path:
    """--otter, else $OTTER_BINARY, else the newest otter binary in a build folder of this repo."""
    if explicit:
        return Path(explicit)
    if os.environ.get("OTTER_BINARY"):
        return Path(os.environ["OTTER_BINARY"])
    found = [p for pattern in ("build/*/otter", "build/*/apps/cli/otter") for p in REPO.glob(pattern)
             if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        raise SystemExit("no otter binary found under build/; build it or pass --otter / set OTTER_BINARY")
    return max(found, key=lambda p: p.stat().st_mtime)


def generate(otter: Path, prompts: list[str], seed: int, scale: float | None, negative: str | None = None,
             steps: int = 20, model: str | None = None, sampler: str | None = None,
             images_per_prompt: int = 1, guidance: str | None = None, log: list | None = None) -> list[np.ndarray]:
    """`guidance`: a recipe for --guidance (then `scale` is not passed); `log`: receives stderr."""
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="otter-eval-") as tmp:
        # f32 pinned so the measured numbers do not depend on which precision `auto` picks here.
        cmd = [str(otter), "generate", "--precision", "f32", "--seed", str(seed), "--steps", str(steps),
               "-o", str(Path(tmp) / "img.png")]
        cmd += ["--guidance", guidance] if guidance else ["--cfg-scale", repr(float(scale))]
        if images_per_prompt != 1:
            cmd += ["--images", str(images_per_prompt)]
        if model:
            cmd += ["-m", model]
        if sampler:
            cmd += ["--sampler", sampler]
        for p in prompts:
            cmd += ["-p", p]
        if negative:  # one negative prompt for every prompt; none = the empty prompt
            cmd += ["-n", negative]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"otter failed ({res.returncode}): {' '.join(cmd)}\n{res.stderr}")
        if log is not None:
            log.append(res.stderr)
        paths = [Path(line) for line in res.stdout.split("\n") if line.strip()]
        return [np.asarray(Image.open(p).convert("RGB")) for p in paths]
