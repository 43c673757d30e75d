"""Stage 2: text encoder and UNet trained jointly with SD's epsilon objective.

x_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps on SD's scaled-linear schedule (1000 steps), loss =
|UNet(x_t, t, TE(caption)) - eps|^2, eps with offset noise (below). 10% of captions are replaced by "" so the same network learns
the unconditional prediction classifier-free guidance subtracts. An exponential moving average of
the weights is what gets exported (it gives cleaner samples from a short run).
"""
from __future__ import annotations

import copy
import math

import torch

from checkpoint import NO_CHECKPOINT, StageCheckpoint
from configs import SCHEDULE

CAPTION_DROPOUT = 0.1
# Offset noise (as in Guttenberg's "Diffusion with Offset Noise"): the training noise gets a random
# constant per image and channel of this size. Without it the noise's mean over a 16x16 latent is
# only about 1/16, smaller than what is left of the image's mean at t = 999 (sqrt(abar) ~ 0.07
# times the background's latent), so the network learned to read the background from the noisy
# latent instead of the caption, and from pure noise drew backgrounds the prompt did not ask for
# (measured mid-training: 14 % of backgrounds right at scale 7.5 while 84 % of shapes were). The
# offset hides the mean as it hid at v1's 8x8 (1/8). Sampling is unchanged (diffusers' schedulers).
OFFSET_NOISE = 0.1
# Caption noise, the second diffusion stage: this share of the training pairs gets the caption of
# another random image, as web captions often do not describe their image (the pairs SD learned
# from). The conditional prediction then learns p(x|c) = 0.7 p(x|c, caption right) + 0.3 p(x), and
# at scale 1 many samples ignore the prompt (measured adherence 0.543), while guidance, which follows
# grad log p(c|x) = grad log p(x|c) - grad log p(x), still finds what the text selects. Trained only
# on true pairs the model followed these prompts 94 % of the time at scale 1, so guidance had
# little to show (0.937 -> 0.990); this is the situation CFG was invented for.
CAPTION_NOISE = 0.3


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(SCHEDULE["beta_start"] ** 0.5, SCHEDULE["beta_end"] ** 0.5,
                           SCHEDULE["num_train_timesteps"], dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, 0).float()


class Joint(torch.nn.Module):
    """Holds both networks so one optimiser and one EMA cover them."""

    def __init__(self, te, unet):
        super().__init__()
        self.te = te
        self.unet = unet

    def forward(self, x, t, ids):
        context, _, _ = self.te(ids)
        return self.unet(x, t, context)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm, alpha=1.0 - decay)


def train_diffusion(te, unet, latent_mean, latent_std, sf: float, ids, empty_ids, steps: int, batch: int,
                    lr: float, ema_decay: float, seed: int, log, ckpt: StageCheckpoint = NO_CHECKPOINT,
                    mismatch: float = 0.0, stage: str = "diffusion"):
    """Trains in place; returns the EMA copy (te, unet) to export. With `ckpt`, resumes from its
    last save and saves every ckpt.every steps. `mismatch`: the share of (kept) captions replaced
    by the caption of another random training image (see CAPTION_NOISE)."""
    g = torch.Generator().manual_seed(seed)
    model = Joint(te, unet).train()
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    abar = alphas_cumprod()
    ids = torch.as_tensor(ids)
    empty = torch.as_tensor(empty_ids)[None]
    n = len(ids)
    state = {"model": model, "ema": ema}
    first = ckpt.load(state, opt, g, log.note)
    for step in range(first, steps):
        scale = min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        idx = torch.randint(0, n, (batch,), generator=g)
        z = (latent_mean[idx] + latent_std[idx] * torch.randn(latent_mean[idx].shape, generator=g)) * sf
        t = torch.randint(0, len(abar), (batch,), generator=g)
        eps = torch.randn(z.shape, generator=g)
        eps = eps + OFFSET_NOISE * torch.randn(z.shape[:2] + (1, 1), generator=g)
        a = abar[t][:, None, None, None]
        x_t = a.sqrt() * z + (1 - a).sqrt() * eps
        drop = torch.rand(batch, generator=g) < CAPTION_DROPOUT
        batch_ids = ids[idx]
        if mismatch > 0:  # drawn only here, so the first stage's random stream is what it was
            wrong = torch.rand(batch, generator=g) < mismatch
            batch_ids = torch.where(wrong[:, None], ids[torch.randint(0, n, (batch,), generator=g)], batch_ids)
        batch_ids = torch.where(drop[:, None], empty, batch_ids)
        loss = (model(x_t, t.float(), batch_ids) - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema_update(ema, model, min(ema_decay, (1 + step) / (10 + step)))
        log(stage, step, {"loss": loss.item()})
        ckpt.maybe_save(step, state, opt, g)
    return ema.te, ema.unet
