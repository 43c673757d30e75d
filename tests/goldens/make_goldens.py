#!/usr/bin/env python3
"""Goldens for otter's features beyond text-to-image, made by the stock diffusers 0.30.3 pipelines
(../shared/oracle, read its README) on the tiny shared models, CPU, float32, plus a float64 re-run of
each case to record how much float32 noise to expect (the manifest's f32_vs_f64).

  ../shared/oracle/setup; export ORACLE_ENV=/path/to/oracle-env
  /usr/bin/python3 tests/goldens/make_goldens.py [--only img2img]

Writes beside this script: <what>.safetensors + <what>.json (the manifest: every case's parameters,
its tensors, the f32-vs-f64 error) and the input pictures as PNG files the CLI tests read.
Every case runs twice and must give the same bytes."""
import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORACLE = Path(os.environ.get("OTTER_ORACLE_DIR", HERE.parents[2] / "shared" / "oracle"))
sys.path.insert(0, str(ORACLE))
sys.path.append(str(HERE))
import common  # noqa: E402

common.setup_path()
sys.path.insert(0, str(common.ORACLE_DIR / "verify_stubs"))
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)
import make_goldens as mg  # noqa: E402  (applies the torch 1.13 baddbmm patch)
import verify_pipeline as vp  # noqa: E402  (the tokenizer/text-encoder adapters for stock pipelines)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img import (  # noqa: E402
    StableDiffusionImg2ImgPipeline)
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import prompt_attention as pa  # noqa: E402  (beside this script)

PROMPT = "a green circle on a blue background"


class TE(vp.TE):
    """verify_pipeline's text-encoder adapter, with the `device` the pipelines ask their modules for
    (which module they ask first follows set order, so without it a run fails now and then)."""

    @property
    def device(self):
        return torch.device("cpu")


class Store(mg.Store):
    def save(self, stem, manifest):
        save_file(self.t, str(HERE / f"{stem}.safetensors"), metadata={"format": "pt"})
        manifest = dict(manifest, file=f"{stem}.safetensors", num_tensors=len(self.t))
        common.write_json(HERE / f"{stem}.json", manifest)
        print(f"  wrote {stem}: {len(self.t)} tensors")


class DrawInFloat32:
    """Every randn_tensor of diffusers (the VAE's latent sample, the pipeline's noise, the samplers'
    ancestral noise) draws float32 values and casts them, so the float64 re-run sees the same noise."""

    def __enter__(self):
        from diffusers.utils import torch_utils
        orig = torch_utils.randn_tensor
        self.saved = []

        def wrapped(shape, generator=None, device=None, dtype=None, layout=None):
            return orig(shape, generator=generator, device=device, dtype=torch.float32, layout=layout).to(dtype)
        for name, mod in list(sys.modules.items()):
            if name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is orig:
                self.saved.append((mod, orig))
                mod.randn_tensor = wrapped
        return self

    def __exit__(self, *a):
        for mod, f in self.saved:
            mod.randn_tensor = f


def picture(kind, size=64):
    """The input pictures: drawn with numpy, no font or resampling involved."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (40, 60, 200)  # blue background
    if kind == "red_circle":
        inside = (x - size / 2) ** 2 + (y - size / 2) ** 2 <= (size * 0.3) ** 2
        img[inside] = (220, 30, 30)
    return img


def save_png(name, arr):
    PIL.Image.fromarray(arr).save(HERE / name)
    return name


def record_add_noise(sched, R):
    """Wrap the sampler's add_noise to keep what img2img starts from."""
    orig = sched.add_noise

    def wrapped(original, noise, timesteps):
        out = orig(original, noise, timesteps)
        R["image_latents"], R["noise"], R["latents_init"] = original.clone(), noise.clone(), out.clone()
        return out
    sched.add_noise = wrapped


def run_img2img(M, p, dtype, image_png):
    sched = mg.SCHEDULERS[p["scheduler"]].from_config(M.base_sched.config, **p["scheduler_overrides"])
    M.to(dtype)
    pipe = StableDiffusionImg2ImgPipeline(vae=M.vae, text_encoder=TE(M.te), tokenizer=vp.Tok(M), unet=M.unet,
                                          scheduler=sched, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    R, steps = {}, []
    record_add_noise(sched, R)

    def on_step(pipe_, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw
    gen = torch.Generator("cpu").manual_seed(p["seed"])
    with torch.no_grad(), DrawInFloat32():
        latents = pipe(prompt=p["prompt"], negative_prompt=p["negative_prompt"],
                       image=PIL.Image.open(HERE / image_png), strength=p["strength"],
                       num_inference_steps=p["num_inference_steps"], guidance_scale=p["guidance_scale"],
                       num_images_per_prompt=p["num_images_per_prompt"], eta=p["eta"], generator=gen,
                       output_type="latent", callback_on_step_end=on_step).images
        decoded = M.vae.decode(latents / M.vae.config.scaling_factor, return_dict=False)[0]
    R["timesteps"] = torch.tensor([float(t) for t in pipe.scheduler.timesteps[len(pipe.scheduler.timesteps) -
                                                                              len(steps):]], dtype=torch.float64)
    R["latents"] = torch.stack(steps)
    R["final_latents"] = latents
    R["decoded"] = decoded
    pil = pipe.image_processor.postprocess(decoded, output_type="pil")
    R["image_uint8"] = torch.from_numpy(np.stack([np.array(im) for im in pil]))
    M.to(torch.float32)
    return R


def img2img_cases(name):
    base = {"prompt": PROMPT, "negative_prompt": None, "seed": 7, "strength": 0.6, "guidance_scale": 7.5,
            "num_inference_steps": 10, "num_images_per_prompt": 1, "eta": 0.0, "scheduler_overrides": {}}
    C = []

    def case(cid, **kw):
        C.append({"id": cid, "params": dict(base, **kw)})
    if name == "tiny-sd1":
        for cid, cls in [("pndm", "PNDMScheduler"), ("lms", "LMSDiscreteScheduler"), ("ddim", "DDIMScheduler"),
                         ("euler", "EulerDiscreteScheduler"), ("euler_a", "EulerAncestralDiscreteScheduler"),
                         ("dpmpp_2m", "DPMSolverMultistepScheduler"), ("heun", "HeunDiscreteScheduler"),
                         ("ddpm", "DDPMScheduler"), ("unipc", "UniPCMultistepScheduler")]:
            case(cid, scheduler=cls)
        case("dpmpp_2m_karras", scheduler="DPMSolverMultistepScheduler",
             scheduler_overrides={"use_karras_sigmas": True})
        case("euler_a_strength1", scheduler="EulerAncestralDiscreteScheduler", strength=1.0)
        case("ddim_strength0.25", scheduler="DDIMScheduler", strength=0.25)
        case("lms_strength0.55_negative", scheduler="LMSDiscreteScheduler", strength=0.55,
             negative_prompt="a red circle")
        case("euler_a_nipp2", scheduler="EulerAncestralDiscreteScheduler", num_images_per_prompt=2)
        case("ddim_two_prompts", scheduler="DDIMScheduler", prompt=[PROMPT, "a yellow square"])
    else:
        case("ddim", scheduler="DDIMScheduler")
        case("euler", scheduler="EulerDiscreteScheduler")
    return C


def make_img2img():
    image_png = save_png("img2img_input.png", picture("red_circle"))
    st, cases = Store(), []
    for name in ["tiny-sd1", "tiny-sd2"]:
        M = mg.Models(name)
        for c in img2img_cases(name):
            p = c["params"]
            R = run_img2img(M, p, torch.float32, image_png)
            R2 = run_img2img(M, p, torch.float32, image_png)
            assert all(torch.equal(R[k], R2[k]) for k in R), f"non-deterministic case {c['id']}"
            R64 = run_img2img(M, p, torch.float64, image_png)
            cid = f"{name}/{c['id']}"
            tensors = {k: st.add(f"{cid}/{k}", v) for k, v in R.items()}
            u8a, u8b = R["image_uint8"].int(), R64["image_uint8"].int()
            tol = {"image_latents": mg.diff(R["image_latents"], R64["image_latents"]),
                   "final_latents": mg.diff(R["final_latents"], R64["final_latents"]),
                   "latents_max_abs_per_step": [(R["latents"][i].double() - R64["latents"][i]).abs().max().item()
                                                for i in range(R["latents"].shape[0])],
                   "image_uint8_max_diff": int((u8a - u8b).abs().max().item()),
                   "image_uint8_num_diff": int((u8a != u8b).sum().item())}
            cases.append({"id": cid, "model": f"models/{name}", "params": p, "init_image": image_png,
                          "unet_evaluations": int(R["latents"].shape[0]), "tensors": tensors, "f32_vs_f64": tol})
            print(f"   {cid:40s} evals={R['latents'].shape[0]:2d} f32-vs-f64 latents "
                  f"{tol['final_latents']['max_abs']:.2e} uint8 maxdiff {tol['image_uint8_max_diff']}")
    st.save("img2img", {"description": "diffusers' StableDiffusionImg2ImgPipeline (stock, output_type latent, then "
                                       "the VAE decode and its pil postprocess) on the tiny shared models, CPU "
                                       "float32. Per case: image_latents = scaling_factor x the VAE encoder's "
                                       "latent sample (drawn first from the seeded generator), noise (drawn next), "
                                       "latents_init = the sampler's add_noise at the first kept timestep, the "
                                       "latents after every step, final latents, decode, 8-bit image.",
                        "versions": mg.versions(), "cases": cases})


WEIGHTED_PROMPTS = [
    "a (red:1.5) circle on a [blue] background",
    "((a red circle)), on a blue background",
    "an \\(escaped\\) bracket and a (half open",
    "a red circle BREAK a blue background",
    "[[a small]] (square:0.5) of (green:-0.3) \\\\ done]",
    "(a red circle:1.2) " + "on a blue background, " * 16,
    "a red circle on a blue background",
]
WEIGHTED_PIPELINES = [  # (model, id, scheduler, prompt, negative)
    ("tiny-sd1", "euler_a_weighted", "EulerAncestralDiscreteScheduler", "a (red:1.5) circle on a [blue] background",
     "(yellow:1.3) triangle"),
    ("tiny-sd2", "ddim_break", "DDIMScheduler", "a red circle BREAK a blue background", "[yellow]"),
]


def weighted(M, prompt, dtype):
    M.to(dtype)
    with torch.no_grad():
        z = pa.weighted_embedding(pa.parse(prompt), M.tok.encode, 49406, 49407, M.pad_id,
                                  lambda ids: M.te(ids)["last_hidden_state"])
    M.to(torch.float32)
    return z


def run_weighted_pipeline(M, scheduler, prompt, negative, dtype):
    cond, uncond = weighted(M, prompt, dtype), weighted(M, negative, dtype)
    empty = weighted(M, "", dtype)
    while uncond.shape[1] < cond.shape[1]:  # shorter side padded with the empty prompt's chunks (webui, otter)
        uncond = torch.cat([uncond, empty], dim=1)
    while cond.shape[1] < uncond.shape[1]:
        cond = torch.cat([cond, empty], dim=1)
    sched = mg.SCHEDULERS[scheduler].from_config(M.base_sched.config)
    M.to(dtype)
    pipe = StableDiffusionPipeline(vae=M.vae, text_encoder=TE(M.te), tokenizer=vp.Tok(M), unet=M.unet,
                                   scheduler=sched, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    gen = torch.Generator("cpu").manual_seed(11)
    with torch.no_grad(), DrawInFloat32():
        latents = pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=64, width=64,
                       num_inference_steps=8, guidance_scale=7.5, generator=gen, output_type="latent").images
    M.to(torch.float32)
    return cond, uncond, latents


def make_weighting():
    st, cases, pipelines = Store(), [], []
    for name in ["tiny-sd1", "tiny-sd2"]:
        M = mg.Models(name)
        for k, prompt in enumerate(WEIGHTED_PROMPTS):
            z, z2 = weighted(M, prompt, torch.float32), weighted(M, prompt, torch.float32)
            assert torch.equal(z, z2)
            z64 = weighted(M, prompt, torch.float64)
            cases.append({"model": f"models/{name}", "prompt": prompt,
                          "pieces": [{"text": t, "weight": w, "break": b} for t, w, b in pa.parse(prompt)],
                          "embedding": st.add(f"{name}/prompt{k}", z), "f32_vs_f64": mg.diff(z, z64)})
        for model, cid, scheduler, prompt, negative in WEIGHTED_PIPELINES:
            if model != name:
                continue
            cond, uncond, latents = run_weighted_pipeline(M, scheduler, prompt, negative, torch.float32)
            _, _, latents64 = run_weighted_pipeline(M, scheduler, prompt, negative, torch.float64)
            pipelines.append({"id": f"{name}/{cid}", "model": f"models/{name}", "scheduler": scheduler,
                              "prompt": prompt, "negative_prompt": negative, "seed": 11, "steps": 8,
                              "guidance_scale": 7.5, "size": 64,
                              "tensors": {"cond": st.add(f"{name}/{cid}/cond", cond),
                                          "uncond": st.add(f"{name}/{cid}/uncond", uncond),
                                          "final_latents": st.add(f"{name}/{cid}/final_latents", latents)},
                              "f32_vs_f64": {"final_latents": mg.diff(latents, latents64)}})
            print(f"   {name}/{cid}: f32-vs-f64 latents {pipelines[-1]['f32_vs_f64']['final_latents']['max_abs']:.2e}")
    st.save("prompt_weighting", {
        "description": "Prompt weighting in the webui's syntax, by prompt_attention.py (a reimplementation from the "
                       "webui's documented behaviour): per prompt its parsed pieces and the weighted text-encoder "
                       "output (chunks of 77, multipliers, mean restored), for tiny-sd1 (pad EOS) and tiny-sd2 "
                       "(pad '!'); and stock StableDiffusionPipeline runs given those embeddings (prompt_embeds, "
                       "negative_prompt_embeds; the shorter padded with the empty prompt's chunks).",
        "versions": mg.versions(), "cases": cases, "pipelines": pipelines})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["img2img", "weighting"])
    a = ap.parse_args()
    if a.only in (None, "img2img"):
        print("img2img")
        make_img2img()
    if a.only in (None, "weighting"):
        print("prompt weighting")
        make_weighting()


if __name__ == "__main__":
    main()
