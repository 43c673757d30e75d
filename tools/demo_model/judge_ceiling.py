"""How well can the judge score images that are perfect up to the model's VAE? Renders the clean
images behind the evaluation prompts, passes them through the exported VAE (encode -> mean ->
decode) and judges both. The VAE round trip bounds what any UNet can reach with this decoder.
Needs torch (the VAE runs in modules.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import dataset
import judge
import shapes


def clean_eval_images(n: int):
    """The single-shape samples of the held-out stream, in eval_guidance.eval_prompts order."""
    out = []
    for s in shapes.samples(dataset.EVAL_SEED):
        if len(s.shapes) == 1:
            out.append(s)
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def load_vae(model_dir: Path):
    import torch

    import modules
    import safetensors_io

    cfg = json.loads((model_dir / "vae" / "config.json").read_text())
    vae = modules.AutoencoderKL(cfg).eval()
    w = safetensors_io.load(model_dir / "vae" / "diffusion_pytorch_model.safetensors")
    vae.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in w.items()})
    return vae


def accuracy(images, samples) -> dict:
    hits = {"shape": 0, "color": 0, "background": 0}
    for im, s in zip(images, samples):
        j = judge.judge(im)
        hits["background"] += j.background == s.background
        if j.main:
            hits["shape"] += j.main.shape == s.shapes[0]
            hits["color"] += j.main.color == s.colors[0]
    return {k: v / len(samples) for k, v in hits.items()}


def measure(model_dir: Path, n: int) -> dict:
    import torch

    samples = clean_eval_images(n)
    clean = np.stack([s.image for s in samples])
    vae = load_vae(Path(model_dir))
    with torch.no_grad():
        y = vae.decode(vae.encode(dataset.to_model_range(clean))[0])
    roundtrip = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return {"clean": accuracy(clean, samples), "vae_roundtrip": accuracy(roundtrip, samples)}
