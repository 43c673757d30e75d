"""Writes a diffusers-format Stable Diffusion 1.x folder from trained modules:

  model_index.json
  scheduler/scheduler_config.json
  text_encoder/{config.json, model.safetensors}
  tokenizer/{vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json}
  unet/{config.json, diffusion_pytorch_model.safetensors}
  vae/{config.json, diffusion_pytorch_model.safetensors}

Weights are stored as float16, like SD's fp16 variants (halves the folder; the networks were
trained in float32 and the rounding does not change the images visibly).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

import configs
import safetensors_io

TOKENIZER_FILES = ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json")


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _weights(module, dtype=np.float16) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(dtype) for k, v in module.state_dict().items()}


def export(out: Path, te, unet, vae, tokenizer_dir: Path, metadata: dict[str, str] | None = None) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "model_index.json", configs.MODEL_INDEX)
    _write_json(out / "scheduler" / "scheduler_config.json", configs.scheduler_config())
    _write_json(out / "text_encoder" / "config.json", te.config)
    _write_json(out / "unet" / "config.json", unet.config)
    _write_json(out / "vae" / "config.json", vae.config)
    meta = {"format": "pt", **(metadata or {})}
    safetensors_io.save(out / "text_encoder" / "model.safetensors", _weights(te), meta)
    safetensors_io.save(out / "unet" / "diffusion_pytorch_model.safetensors", _weights(unet), meta)
    safetensors_io.save(out / "vae" / "diffusion_pytorch_model.safetensors", _weights(vae), meta)
    (out / "tokenizer").mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(Path(tokenizer_dir) / name, out / "tokenizer" / name)


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
