"""Judges a training run's current UNet in Python, without exporting: the EMA weights of the
diffusion stage's mid-stage checkpoint (or the finished te_unet_ema.pt; --stage caption_noise: the
second stage's), DDIM with CFG in torch
(SD's leading timesteps, steps_offset 1, final alpha = alphas_cumprod[0]), decoded by the run's
fine-tuned VAE, read by the judge on the first N held-out evaluation prompts. A quick look at how a
run is going (about 40 s for 50 prompts on 2 cores); the published numbers come from
eval_guidance.py through the otter CLI.

  /usr/bin/python3 tools/demo_model/eval_checkpoint.py [--work build/demo_model_work/full] [--stage diffusion] [--prompts 50]
      [--scales 7.5 1] [--grid out.png]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import configs  # noqa: E402
import eval_guidance  # noqa: E402
import judge  # noqa: E402
import modules  # noqa: E402
from clip_tokenize import Tokenizer  # noqa: E402
from train import FULL, REPO, SEED  # noqa: E402
from train_diffusion import Joint, alphas_cumprod  # noqa: E402
from train_vae import encode_all, scaling_factor  # noqa: E402


# What each diffusion stage leaves when it has finished (its mid-stage checkpoint is STAGE.ckpt).
FINISHED = {"diffusion": "te_unet_ema.pt", "caption_noise": "caption_noise_ema.pt"}


def load_networks(work: Path, stage: str = "diffusion"):
    tok = Tokenizer(work / "tokenizer")
    te = modules.CLIPTextModel(configs.text_encoder_config(len(tok.vocab)))
    unet = modules.UNet2DConditionModel(configs.unet_config())
    if (work / f"{stage}.ckpt").exists():
        state = torch.load(work / f"{stage}.ckpt")
        Joint(te, unet).load_state_dict(state["modules"]["ema"])
        step = state["next_step"]
    else:
        state = torch.load(work / FINISHED[stage])
        te.load_state_dict(state["te"])
        unet.load_state_dict(state["unet"])
        step = "final"
    vae = modules.AutoencoderKL(configs.vae_config())
    vae.load_state_dict(torch.load(work / "decoder.pt")["vae"])
    return tok, te.eval(), unet.eval(), vae.eval(), step


def latent_scale(work: Path, vae) -> float:
    """train.py's scaling factor: from the cached latents when there, else by encoding again."""
    if (work / "latents.pt").exists():
        cached = torch.load(work / "latents.pt")
        mean, std = cached["mean"], cached["std"]
    else:
        import dataset

        images, _ = dataset.training_set(work, FULL["images"])
        mean, std = encode_all(vae, images)
    return scaling_factor(mean, std, SEED + 2)  # as train.py draws it


@torch.no_grad()
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / "build" / "demo_model_work" / "full")
    ap.add_argument("--stage", choices=sorted(FINISHED), default="diffusion",
                    help="which diffusion stage's weights: its mid-stage checkpoint, else its finished file")
    ap.add_argument("--prompts", type=int, default=50)
    ap.add_argument("--scales", type=float, nargs="+", default=[7.5, 1.0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--scaling-factor", type=float, help="skip computing it (train.py prints it)")
    ap.add_argument("--grid", type=Path, help="save the first 12 images of each scale here (SCALE is appended)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok, te, unet, vae, step = load_networks(args.work, args.stage)
    sf = args.scaling_factor or latent_scale(args.work, vae)
    prompts = eval_guidance.eval_prompts(args.prompts)
    n = len(prompts)
    abar = alphas_cumprod().double()
    stride = 1000 // args.steps
    ts = [t + 1 for t in range(0, 1000, stride)][::-1]
    side = configs.unet_config()["sample_size"]
    x = torch.randn(n, 4, side, side, generator=torch.Generator().manual_seed(0))
    cond, _, _ = te(torch.as_tensor(tok.batch([p["prompt"] for p in prompts])))
    uncond, _, _ = te(torch.as_tensor(tok.batch([""] * n)))
    print(f"checkpoint step {step}, scaling factor {sf:.5f}, {n} prompts")
    for scale in args.scales:
        z = x.clone()
        for i, t in enumerate(ts):
            e = unet(torch.cat([z, z]), torch.full((2 * n,), float(t)), torch.cat([uncond, cond]))
            eu, ec = e.chunk(2)
            eps = eu + scale * (ec - eu)
            a, a_prev = abar[t], abar[ts[i + 1]] if i + 1 < len(ts) else abar[0]
            x0 = (z - (1 - a).sqrt() * eps) / a.sqrt()
            z = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).float()
        images = ((vae.decode(z / sf).clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        scores = [eval_guidance.score(judge.judge(im), p) for im, p in zip(images, prompts)]
        table = {k: float(np.mean([s[k] for s in scores])) for k in ("shape", "color", "background", "all")}
        print(f"scale {scale:g}: " + ", ".join(f"{k} {v:.3f}" for k, v in table.items()), flush=True)
        if args.grid:
            from PIL import Image

            Image.fromarray(np.concatenate(list(images[:12]), axis=1)).save(f"{args.grid}{scale:g}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
