"""Stage 1: the KL autoencoder (128x128x3 <-> 16x16x4), then its latent scaling factor.

Loss = L1 + MSE on pixels in [-1, 1] + a small KL term that keeps the latents bounded and smooth
(SD's VAE adds perceptual and GAN losses; flat-coloured shapes do not need them). Pixels that
differ from the image's background count FOREGROUND_WEIGHT times: the shapes cover ~10% of the
image, and without the weight the first hundreds of steps only learn the background colour.
"""
from __future__ import annotations

import math

import torch

import modules
from checkpoint import NO_CHECKPOINT, StageCheckpoint
from dataset import to_model_range

KL_WEIGHT = 1e-5
FOREGROUND_WEIGHT = 10.0


def foreground_weights(x):
    """1 on background pixels, FOREGROUND_WEIGHT elsewhere; background = median border colour."""
    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2), x[:, :, :, :2].flatten(2),
                        x[:, :, :, -2:].flatten(2)], dim=2)
    bg = border.median(dim=2).values[:, :, None, None]
    fg = ((x - bg).abs().sum(dim=1, keepdim=True) > 0.1).float()
    return 1.0 + (FOREGROUND_WEIGHT - 1.0) * fg


def train_vae(vae: modules.AutoencoderKL, images, steps: int, batch: int, lr: float, seed: int, log,
              snapshot=None, ckpt: StageCheckpoint = NO_CHECKPOINT):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    n = len(images)
    first = ckpt.load({"vae": vae}, opt, g, log.note)
    for step in range(first, steps):
        scale = min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, n, (batch,), generator=g)
        x = to_model_range(images[idx.numpy()])
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        y = vae.decode(z)
        w = foreground_weights(x)
        l1 = (w * (y - x).abs()).mean()
        l2 = (w * (y - x).pow(2)).mean()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
        loss = l1 + l2 + KL_WEIGHT * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        log("vae", step, {"loss": loss.item(), "l1": l1.item(), "kl": kl.item()})
        ckpt.maybe_save(step, {"vae": vae}, opt, g)
        if snapshot and (step + 1) % 250 == 0:
            vae.eval()
            snapshot(vae)
            vae.train()
    vae.eval()


@torch.no_grad()
def encode_all(vae: modules.AutoencoderKL, images, batch: int = 256):
    """(mean, std) of the latent Gaussian for every image, float32 [N,4,h,w] each."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        mean, logvar = vae.encode(to_model_range(images[i:i + batch]))
        means.append(mean)
        stds.append(torch.exp(0.5 * logvar))
    return torch.cat(means), torch.cat(stds)


def scaling_factor(mean, std, seed: int) -> float:
    """1 / std of sampled latents, as SD computed 0.18215: unit-variance inputs for the UNet."""
    g = torch.Generator().manual_seed(seed)
    z = mean + std * torch.randn(mean.shape, generator=g)
    return float(1.0 / z.std())


def finetune_decoder(vae: modules.AutoencoderKL, images, latent_mean, latent_std, steps: int, batch: int, lr: float,
                     seed: int, log, ckpt: StageCheckpoint = NO_CHECKPOINT):
    """Trains only post_quant_conv + decoder on latents of the frozen encoder (as SD's ft-MSE VAE
    did): sharper shapes, while the latents the UNet learns on stay exactly the same."""
    g = torch.Generator().manual_seed(seed)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.decoder.train()
    n = len(images)
    first = ckpt.load({"vae": vae}, opt, g, log.note)
    for step in range(first, steps):
        scale = min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, n, (batch,), generator=g)
        x = to_model_range(images[idx.numpy()])
        z = latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=g)
        y = vae.decode(z)
        w = foreground_weights(x)
        l1 = (w * (y - x).abs()).mean()
        loss = l1 + (w * (y - x).pow(2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log("decoder", step, {"loss": loss.item(), "l1": l1.item()})
        ckpt.maybe_save(step, {"vae": vae}, opt, g)
    vae.eval()
