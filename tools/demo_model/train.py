"""Trains otter's bundled demo model from scratch and exports it as a diffusers folder.

  /usr/bin/python3 tools/demo_model/train.py             # full run (~1.5 h on 2 cores), writes
                                                         # models/otter-shapes and train_log.csv
  /usr/bin/python3 tools/demo_model/train.py --smoke     # a few steps of every stage (CI, < 30 s)

Stages: BPE tokenizer on the captions -> render the training set -> VAE -> latent scaling factor
-> text encoder + UNet jointly (epsilon objective, 10% empty captions) -> the same with 30% of
captions swapped for another image's (caption noise) -> export. Every random
choice comes from a fixed seed and torch runs on 2 threads, so a rerun on the same software gives
the same weights (floating-point reductions may still differ across CPUs/library builds).
"""
from __future__ import annotations

import os

# OpenMP threads that spin while waiting make torch ~10x slower on a busy 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import bpe_trainer  # noqa: E402
import configs  # noqa: E402
import dataset  # noqa: E402
import export  # noqa: E402
import modules  # noqa: E402
from checkpoint import StageCheckpoint  # noqa: E402
from clip_tokenize import Tokenizer  # noqa: E402
from train_diffusion import CAPTION_NOISE, train_diffusion  # noqa: E402
from train_vae import encode_all, finetune_decoder, scaling_factor, train_vae  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

FULL = dict(captions=20000, images=32000, vae_steps=1000, vae_batch=16, vae_lr=1e-3,
            decoder_steps=500, decoder_batch=16, decoder_lr=5e-4, unet_steps=3600, unet_batch=64, unet_lr=1e-3, ema=0.999,
            noise_steps=1500, noise_lr=3e-4, log_every=25, checkpoint_every=100)
SMOKE = dict(captions=500, images=64, vae_steps=2, vae_batch=4, vae_lr=1e-3,
             decoder_steps=2, decoder_batch=4, decoder_lr=5e-4, unet_steps=4, unet_batch=4, unet_lr=1e-3, ema=0.998,
             noise_steps=4, noise_lr=3e-4, log_every=1, checkpoint_every=2)
SEED = 20240501


class Logger:
    """Averages losses over `every` steps and appends them to a CSV (stage, step, loss, ..., time)."""

    def __init__(self, path: Path, every: int, append: bool = False):
        self.every, self.t0, self.acc = every, time.time(), {}
        path.parent.mkdir(parents=True, exist_ok=True)
        append = append and path.exists() and path.stat().st_size > 0
        self.f = open(path, "a" if append else "w", newline="")
        self.w = csv.writer(self.f)
        if not append:
            self.w.writerow(["stage", "step", "loss", "detail", "elapsed_s"])

    def __call__(self, stage, step, values: dict):
        for k, v in values.items():
            self.acc.setdefault(k, []).append(v)
        if (step + 1) % self.every == 0:
            avg = {k: sum(v) / len(v) for k, v in self.acc.items()}
            detail = " ".join(f"{k}={v:.5g}" for k, v in avg.items() if k != "loss")
            elapsed = time.time() - self.t0
            self.w.writerow([stage, step + 1, f"{avg['loss']:.6f}", detail, f"{elapsed:.1f}"])
            self.f.flush()
            print(f"[{elapsed:7.1f}s] {stage} step {step + 1}: loss {avg['loss']:.5f} {detail}", flush=True)
            self.acc = {}

    def note(self, text: str):
        print(f"[{time.time() - self.t0:7.1f}s] {text}", flush=True)


@torch.no_grad()
def save_reconstructions(vae, images, path: Path):
    """Originals (top row) over their VAE reconstructions (bottom row), for a quick look."""
    from PIL import Image

    x = dataset.to_model_range(images)
    y = vae.decode(vae.encode(x)[0])
    rows = [torch.cat(list(t.clamp(-1, 1)), dim=2) for t in (x, y)]
    grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(grid).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="a few steps of every stage, into the work folder")
    ap.add_argument("--work", type=Path, default=REPO / "build" / "demo_model_work",
                    help="caches and checkpoints (default: build/demo_model_work)")
    ap.add_argument("--out", type=Path, help="exported model folder (default: models/otter-shapes; "
                                              "with --smoke: WORK/smoke-model)")
    ap.add_argument("--log", type=Path, help="loss log CSV (default: tools/demo_model/train_log.csv)")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run: reuse the finished stages in the work folder (vae.pt, "
                         "latents.pt, decoder.pt, te_unet_ema.pt, caption_noise_ema.pt), continue an unfinished one from its last mid-stage "
                         "checkpoint (*.ckpt) and append to the log; every stage has its own seeded "
                         "generator, saved with it, so the result equals an uninterrupted run")
    args = ap.parse_args()
    p = SMOKE if args.smoke else FULL
    work = args.work / ("smoke" if args.smoke else "full")
    out = args.out or (work / "smoke-model" if args.smoke else REPO / "models" / "otter-shapes")
    log = Logger(args.log or (work / "train_log.csv" if args.smoke else HERE / "train_log.csv"), p["log_every"],
                 append=args.resume)
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    start = time.time()

    def stage_checkpoint(name: str) -> StageCheckpoint:
        """Mid-stage state of `name`; a run without --resume starts the stage afresh."""
        path = work / f"{name}.ckpt"
        if not args.resume and path.exists():
            path.unlink()
        return StageCheckpoint(path, p["checkpoint_every"])

    # 1. Tokenizer.
    texts = [s.caption for s in dataset.shapes.batch(dataset.TRAIN_SEED, p["captions"], draw=False)]
    merges = bpe_trainer.train(texts, max_merges=400)
    tok_dir = work / "tokenizer"
    vocab = bpe_trainer.write_tokenizer(tok_dir, merges)
    tok = Tokenizer(tok_dir)
    log.note(f"tokenizer: {len(merges)} merges, vocab {len(vocab)}")

    # 2. Training images.
    images, captions = dataset.training_set(work, p["images"], log=log.note)
    log.note(f"{len(images)} training images")

    # 3. VAE, then its latents and scaling factor, then a decoder-only fine-tune.
    vae = modules.AutoencoderKL(configs.vae_config())
    if args.resume and (work / "vae.pt").exists():
        vae.load_state_dict(torch.load(work / "vae.pt")["vae"])
        log.note("VAE loaded from vae.pt")
    else:
        ckpt = stage_checkpoint("vae")
        train_vae(vae, images, p["vae_steps"], p["vae_batch"], p["vae_lr"], SEED + 1, log,
                  lambda v: save_reconstructions(v, images[:16], work / "vae_reconstructions.png"), ckpt)
        torch.save({"vae": vae.state_dict()}, work / "vae.pt")
        ckpt.done()
    vae.eval()
    # The latents of every training image (10 min at 128x128 on 2 cores), kept beside vae.pt so a
    # resumed run does not encode again; they depend only on vae.pt and the images.
    latents = work / "latents.pt"
    if args.resume and latents.exists():
        mean, std = (torch.load(latents)[k] for k in ("mean", "std"))
        log.note("latents loaded from latents.pt")
    else:
        mean, std = encode_all(vae, images)
        torch.save({"mean": mean, "std": std}, latents)
    sf = scaling_factor(mean, std, SEED + 2)
    vae.config["scaling_factor"] = sf
    log.note(f"VAE done; latent scaling_factor = {sf:.5f}")
    if args.resume and (work / "decoder.pt").exists():
        vae.load_state_dict(torch.load(work / "decoder.pt")["vae"])
        log.note("fine-tuned decoder loaded from decoder.pt")
    else:
        ckpt = stage_checkpoint("decoder")
        finetune_decoder(vae, images, mean, std, p["decoder_steps"], p["decoder_batch"], p["decoder_lr"], SEED + 4, log,
                         ckpt)
        torch.save({"vae": vae.state_dict()}, work / "decoder.pt")
        ckpt.done()
    save_reconstructions(vae, images[:16], work / "vae_reconstructions.png")

    # 4. Text encoder + UNet.
    te = modules.CLIPTextModel(configs.text_encoder_config(len(vocab)))
    unet = modules.UNet2DConditionModel(configs.unet_config())
    ids = tok.batch(captions)  # both diffusion stages train on these
    if args.resume and (work / "te_unet_ema.pt").exists():
        ck = torch.load(work / "te_unet_ema.pt")
        te.load_state_dict(ck["te"])
        unet.load_state_dict(ck["unet"])
        te_ema, unet_ema = te, unet
        log.note("text encoder + UNet loaded from te_unet_ema.pt")
    else:
        ckpt = stage_checkpoint("diffusion")
        te_ema, unet_ema = train_diffusion(te, unet, mean, std, sf, ids, tok(""), p["unet_steps"], p["unet_batch"],
                                           p["unet_lr"], p["ema"], SEED + 3, log, ckpt)
        torch.save({"te": te_ema.state_dict(), "unet": unet_ema.state_dict()}, work / "te_unet_ema.pt")
        ckpt.done()

    # 4b. The same networks continue on pairs of which CAPTION_NOISE have the wrong caption, so the
    # conditional prediction alone follows the prompt only as often as such data lets it.
    if args.resume and (work / "caption_noise_ema.pt").exists():
        ck = torch.load(work / "caption_noise_ema.pt")
        te_ema.load_state_dict(ck["te"])
        unet_ema.load_state_dict(ck["unet"])
        log.note("caption-noise stage loaded from caption_noise_ema.pt")
    else:
        ckpt = stage_checkpoint("caption_noise")
        te_ema, unet_ema = train_diffusion(copy.deepcopy(te_ema), copy.deepcopy(unet_ema), mean, std, sf, ids, tok(""),
                                           p["noise_steps"], p["unet_batch"], p["noise_lr"], p["ema"], SEED + 5, log,
                                           ckpt, mismatch=CAPTION_NOISE, stage="caption_noise")
        torch.save({"te": te_ema.state_dict(), "unet": unet_ema.state_dict()}, work / "caption_noise_ema.pt")
        ckpt.done()
    minutes = (time.time() - start) / 60
    log.note(f"training done in {minutes:.1f} min")

    # 5. Export.
    export.export(out, te_ema, unet_ema, vae, tok_dir, {"otter_model": "otter-shapes"})
    log.note(f"exported {out} ({export.folder_size(out) / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
