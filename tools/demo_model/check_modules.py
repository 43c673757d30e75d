"""Proves modules.py computes what diffusers computes: loads ../shared/models/tiny-sd1 (a randomly
initialised SD 1.x diffusers folder) into our modules and compares every component with the
goldens diffusers recorded (golden/tiny-sd1_components.safetensors). Exit status 1 when any
max |difference| exceeds the tolerance (1e-4, the engine's acceptance bound; 3e-4 for the
encoder mean as in shared/README.md).

  /usr/bin/python3 tools/demo_model/check_modules.py [--shared DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import modules
import safetensors_io


def load_into(module: torch.nn.Module, path: Path, ignore=("text_model.embeddings.position_ids",)):
    tensors = {k: torch.from_numpy(v) for k, v in safetensors_io.load(path).items() if k not in ignore}
    missing, unexpected = module.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise SystemExit(f"{path}: state dict mismatch; missing {missing[:5]}, unexpected {unexpected[:5]}")


def main() -> int:
    here = Path(__file__).resolve().parent
    default_shared = os.environ.get("OTTER_SHARED_DIR", str(here.parents[2] / "shared"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=default_shared)
    args = ap.parse_args()
    shared = Path(args.shared)
    model_dir = shared / "models" / "tiny-sd1"
    golden_file = shared / "golden" / "tiny-sd1_components.safetensors"
    if not golden_file.exists():
        print(f"SKIP: {golden_file} not found (set OTTER_SHARED_DIR)")
        return 0
    torch.set_num_threads(2)
    g = {k: torch.from_numpy(v) for k, v in safetensors_io.load(golden_file).items()}
    manifest = json.loads((shared / "golden" / "tiny-sd1_components.json").read_text())
    cases = {c["id"]: c for c in manifest["cases"]}

    cfg = lambda sub: json.loads((model_dir / sub / "config.json").read_text())  # noqa: E731
    te = modules.CLIPTextModel(cfg("text_encoder")).eval()
    unet = modules.UNet2DConditionModel(cfg("unet")).eval()
    vae = modules.AutoencoderKL(cfg("vae")).eval()
    load_into(te, model_dir / "text_encoder" / "model.safetensors")
    load_into(unet, model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    load_into(vae, model_dir / "vae" / "diffusion_pytorch_model.safetensors")

    results = []

    def compare(name, got, want, tol=1e-4):
        err = (got - want).abs().max().item()
        results.append((name, err, tol))

    with torch.no_grad():
        last, pooled, hidden = te(g["te/input_ids"])
        compare("text_encoder last_hidden_state", last, g["te/last_hidden_state"])
        compare("text_encoder hidden_states", torch.stack(hidden, 1), g["te/hidden_states"])
        compare("text_encoder pooler_output", pooled, g["te/pooler_output"])
        for cid in ("unet/t999", "unet/t500", "unet/t1", "unet/t_per_sample", "unet/t_fractional"):
            t = torch.tensor(cases[cid]["timestep"], dtype=torch.float32)
            out = unet(g[f"{cid}/sample"], t, g[f"{cid}/encoder_hidden_states"])
            compare(cid, out, g[f"{cid}/out"])
        compare("vae/decode", vae.decode(g["vae/decode/decoder_input"]), g["vae/decode/out"])
        mean, logvar = vae.encode(g["vae/encode/image"])
        compare("vae/encode mean", mean, g["vae/encode/mean"], 3e-4)
        compare("vae/encode logvar", logvar, g["vae/encode/logvar"])

    ok = True
    for name, err, tol in results:
        status = "ok" if err <= tol else "FAIL"
        ok &= err <= tol
        print(f"{status:4}  {name:32} max|diff| = {err:.3g}  (tolerance {tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
