"""A fixed, cached slice of the shapes stream for training (rendering is ~7 ms per image, so the
training set is drawn once and kept as .npz in the work folder)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import shapes

TRAIN_SEED = 1  # training stream
EVAL_SEED = 2  # held-out prompts for eval_guidance.py
JUDGE_SEED = 3  # shape-classifier training renders for the judge


def training_set(work: Path, count: int, seed: int = TRAIN_SEED, log=print):
    """Returns (images uint8 [N,128,128,3], captions list[str]), rendering only on the first call."""
    cache = Path(work) / f"train_seed{seed}_n{count}_{shapes.IMAGE_SIZE}px.npz"
    if cache.exists():
        d = np.load(cache)
        return d["images"], json.loads(str(d["captions"]))
    log(f"rendering {count} training images (seed {seed}) ...")
    items = shapes.batch(seed, count)
    images = np.stack([s.image for s in items])
    captions = [s.caption for s in items]
    Path(work).mkdir(parents=True, exist_ok=True)
    np.savez(cache, images=images, captions=json.dumps(captions))
    return images, captions


def to_model_range(images_uint8: np.ndarray):
    """uint8 HWC -> float32 NCHW in [-1, 1], the VAE's pixel range."""
    import torch

    x = torch.from_numpy(images_uint8).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0
