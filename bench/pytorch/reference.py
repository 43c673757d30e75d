"""The PyTorch figures otter-bench is compared with, measured on the same machine.

Runs the SD 1.5 UNet and VAE decoder -- the same architecture and random-weight setup as
otter-bench, built from tools/demo_model/modules.py (PyTorch modules with diffusers' parameter
names and maths, checked against diffusers' goldens by tools/demo_model/check_modules.py) -- under
Debian's PyTorch (1.13, oneDNN 2.6 inside), the way diffusers runs on a CPU with this torch:
batched [uncond, cond] UNet pass, unfused attention (softmax(QK^T)V). f32 as it comes, and bf16 by
casting the whole model (as issue #6's reference figures do).

  /usr/bin/python3 bench/pytorch/reference.py [--sizes 256 512] [--precisions f32 bf16] [--threads 2]
      [--json out.json]

Prints a table and writes JSON: seconds per UNet pass at batch 2 and 1, VAE decode, text
encoding (CLIP ViT-L, 2x77 tokens) per precision and size, and peak RSS of the process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools" / "demo_model"))
import configs  # noqa: E402
import modules  # noqa: E402

DTYPE = torch.float32
_timestep_features = modules.timestep_features


def _timestep_features_in_model_dtype(*args, **kwargs):
    # modules.UNet2DConditionModel builds the sinusoidal features in f32; a bf16 model needs them
    # in bf16 (diffusers casts them to the model's dtype the same way).
    return _timestep_features(*args, **kwargs).to(DTYPE)


modules.timestep_features = _timestep_features_in_model_dtype


def sd15_unet_config() -> dict:
    c = configs.unet_config()
    c.update(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, attention_head_dim=8,
             cross_attention_dim=768, norm_num_groups=32, sample_size=64, in_channels=4, out_channels=4,
             down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
    return c


def sd15_vae_config() -> dict:
    c = configs.vae_config()
    c.update(block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32, latent_channels=4)
    return c


def sd15_text_config() -> dict:
    c = configs.text_encoder_config(49408)
    c.update(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
             max_position_embeddings=77, hidden_act="quick_gelu")
    return c


def best_of(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@torch.no_grad()
def main() -> int:
    global DTYPE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--precisions", nargs="+", default=["f32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    unet = modules.UNet2DConditionModel(sd15_unet_config()).eval()
    vae = modules.AutoencoderKL(sd15_vae_config()).eval()
    te = modules.CLIPTextModel(sd15_text_config()).eval()
    report = {"torch": torch.__version__, "threads": a.threads, "mkldnn": torch.backends.mkldnn.is_available()}
    print(f"torch {torch.__version__}, {a.threads} threads")
    print(f"{'prec':5} {'size':5} {'phase':28} {'seconds':>10}")
    for prec in a.precisions:
        DTYPE = torch.bfloat16 if prec == "bf16" else torch.float32
        unet.to(DTYPE), vae.to(DTYPE), te.to(DTYPE)
        out = {}
        ids = torch.full((2, 77), 49407, dtype=torch.long)
        ids[:, 0] = 49406
        te(ids)
        out["text_encoding_seconds"] = best_of(a.runs + 1, lambda: te(ids))
        print(f"{prec:5} {'-':5} {'text encoding (2x77 tokens)':28} {out['text_encoding_seconds']:10.3f}")
        for size in a.sizes:
            l = size // 8
            x2 = torch.randn(2, 4, l, l).to(DTYPE)
            ctx2 = torch.randn(2, 77, 768).to(DTYPE)
            x1, ctx1 = x2[:1].contiguous(), ctx2[1:].contiguous()
            unet(x2, 500.0, ctx2)  # warm-up: oneDNN primitives, allocator
            at = {"cfg_step_batch2_seconds": best_of(a.runs, lambda: unet(x2, 500.0, ctx2)),
                  "step_batch1_seconds": best_of(a.runs, lambda: unet(x1, 500.0, ctx1))}
            z = torch.randn(1, 4, l, l).to(DTYPE)
            vae.decode(z)
            at["vae_decode_seconds"] = best_of(max(1, a.runs - 1), lambda: vae.decode(z))
            print(f"{prec:5} {size:<5} {'UNet step, CFG (batch 2)':28} {at['cfg_step_batch2_seconds']:10.3f}")
            print(f"{prec:5} {size:<5} {'UNet step, no uncond (b1)':28} {at['step_batch1_seconds']:10.3f}")
            print(f"{prec:5} {size:<5} {'VAE decode':28} {at['vae_decode_seconds']:10.3f}", flush=True)
            out[str(size)] = at
        report[prec] = out
    report["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"peak RSS {report['peak_rss_gb']:.2f} GB (whole run)")
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
