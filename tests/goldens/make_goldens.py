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


# ---- LoRA ------------------------------------------------------------------------------------
LORA_SEED = {"tiny-sd1": 1234, "tiny-sd2": 4321}


def lora_targets(M, style):
    """(component, module name, module) the random LoRAs touch: the kohya one every attention and
    resnet layer of the UNet (linear and conv, 3x3 included) and every linear of the text encoder;
    the PEFT one the attention projections and the text encoder's q/v, as PEFT trainings do."""
    out = []
    for comp, model in (("unet", M.unet), ("text_encoder", M.te)):
        for name, m in model.named_modules():
            if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            if style == "kohya" and (comp == "text_encoder" or "attentions" in name or "resnets" in name):
                out.append((comp, name, m))
            if style == "peft" and (name.endswith(("to_q", "to_k", "to_v", "to_out.0", "q_proj", "v_proj"))):
                out.append((comp, name, m))
    return out


def random_lora(M, name, style, rank, alpha):
    """{(component, module): (down, up, alpha)} with down [r, in(, kh, kw)], up [out, r(, 1, 1)]."""
    g = torch.Generator().manual_seed(LORA_SEED[name] + (0 if style == "kohya" else 1))
    layers = {}
    for comp, mod_name, m in lora_targets(M, style):
        w = m.weight
        if w.dim() == 4:
            down = torch.randn(rank, w.shape[1], w.shape[2], w.shape[3], generator=g) / (w.shape[1] * w.shape[2] * w.shape[3]) ** 0.5
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g) * 0.2
        else:
            down = torch.randn(rank, w.shape[1], generator=g) / w.shape[1] ** 0.5
            up = torch.randn(w.shape[0], rank, generator=g) * 0.2
        layers[(comp, mod_name)] = (down, up, alpha)
    return layers


def kohya_file(layers):
    sd = {}
    for (comp, mod_name), (down, up, alpha) in layers.items():
        stem = ("lora_unet_" if comp == "unet" else "lora_te_") + mod_name.replace(".", "_")
        sd[f"{stem}.lora_down.weight"], sd[f"{stem}.lora_up.weight"] = down, up
        sd[f"{stem}.alpha"] = torch.tensor(float(alpha))
    return sd


def peft_file(layers):
    sd = {}
    for (comp, mod_name), (down, up, alpha) in layers.items():
        sd[f"{comp}.{mod_name}.lora_A.weight"], sd[f"{comp}.{mod_name}.lora_B.weight"] = down, up
    return sd


def check_kohya_names_with_diffusers(sd, layers):
    """diffusers' own kohya converter must name every layer as the goldens' merge does."""
    from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_lora_to_diffusers
    converted, alphas = _convert_non_diffusers_lora_to_diffusers(dict(sd))
    names = set()
    for k in converted:
        if ".down." not in k:
            continue
        n = k.replace(".processor.", ".").replace(".lora_linear_layer.", ".lora.")
        for proj, plain in (("to_q_lora", "to_q"), ("to_k_lora", "to_k"), ("to_v_lora", "to_v"),
                            ("to_out_lora", "to_out.0")):
            n = n.replace(proj, plain)
        n = n.replace(".lora.down.weight", "").replace(".down.weight", "")
        n = n.replace("text_encoder.text_model.encoder.layers", "text_encoder.text_model.encoder.layers")
        names.add(n)
    want = {f"{comp}.{mod}" for comp, mod in layers}
    te = {n for n in want if n.startswith("text_encoder.")}
    # diffusers renames the TE attention projections to_q/to_k/... (its attention-processor names).
    te_fixed = {n.replace("self_attn.q_proj", "self_attn.to_q").replace("self_attn.k_proj", "self_attn.to_k")
                 .replace("self_attn.v_proj", "self_attn.to_v").replace("self_attn.out_proj", "self_attn.to_out.0")
                for n in te}
    missing = ((want - te) | te_fixed) - names
    assert not missing, f"diffusers names differently: {sorted(missing)[:5]}"
    assert len(alphas) == len(layers)


def merged(M, loras, dtype):
    """The base weights plus sum_i w_i * (alpha/rank) * up @ down (the formula: diffusers' merge,
    fuse_lora, needs PEFT, which Debian's torch 1.13 environment lacks), in `dtype`."""
    saved = {}
    with torch.no_grad():
        for layers, weight in loras:
            for (comp, mod_name), (down, up, alpha) in layers.items():
                m = dict((M.unet if comp == "unet" else M.te).named_modules())[mod_name]
                key = (comp, mod_name)
                if key not in saved:
                    saved[key] = m.weight.detach().clone()
                rank = down.shape[0]
                delta = (up.to(dtype).flatten(1) @ down.to(dtype).flatten(1)).reshape(m.weight.shape)
                m.weight += weight * (alpha / rank) * delta
    return saved


def restore(M, saved):
    with torch.no_grad():
        for (comp, mod_name), w in saved.items():
            dict((M.unet if comp == "unet" else M.te).named_modules())[mod_name].weight.copy_(w)


def lora_pipeline(M, scheduler, loras, dtype):
    case = {"params": {"prompt": PROMPT, "negative_prompt": None, "seed": 5, "guidance_scale": 7.5,
                       "guidance_rescale": 0.0, "num_inference_steps": 8, "height": 64, "width": 64,
                       "num_images_per_prompt": 1, "eta": 0.0, "scheduler_overrides": {}, "force_cfg": False,
                       "scheduler": scheduler}}
    M.to(dtype)
    saved = merged(M, loras, dtype)
    R, _ = mg.run_pipeline(M, case, dtype)
    restore(M, saved)
    M.to(torch.float32)
    return R


def make_lora():
    st, files, cases = Store(), {}, []
    for name in ["tiny-sd1", "tiny-sd2"]:
        M = mg.Models(name)
        kohya = random_lora(M, name, "kohya", rank=4, alpha=2.0)
        ksd = kohya_file(kohya)
        check_kohya_names_with_diffusers(ksd, kohya)
        save_file(ksd, str(HERE / f"lora_{name}_kohya.safetensors"))
        files[f"{name}_kohya"] = {"file": f"lora_{name}_kohya.safetensors", "format": "kohya", "rank": 4,
                                  "alpha": 2.0, "layers": len(kohya)}
        runs = [("kohya0.8", [(kohya, 0.8)])]
        if name == "tiny-sd1":
            peft = random_lora(M, name, "peft", rank=2, alpha=2.0)  # no alpha in the file: alpha = rank
            save_file(peft_file(peft), str(HERE / f"lora_{name}_peft.safetensors"))
            files[f"{name}_peft"] = {"file": f"lora_{name}_peft.safetensors", "format": "peft", "rank": 2,
                                     "alpha": None, "layers": len(peft)}
            runs += [("peft1", [(peft, 1.0)]), ("kohya0.8_peft-0.5", [(kohya, 0.8), (peft, -0.5)])]
        scheduler = "EulerDiscreteScheduler"
        base = mg.run_pipeline(M, {"params": {"prompt": PROMPT, "negative_prompt": None, "seed": 5,
                                              "guidance_scale": 7.5, "guidance_rescale": 0.0,
                                              "num_inference_steps": 8, "height": 64, "width": 64,
                                              "num_images_per_prompt": 1, "eta": 0.0, "scheduler_overrides": {},
                                              "force_cfg": False, "scheduler": scheduler}}, torch.float32)[0]
        for cid, loras in runs:
            R = lora_pipeline(M, scheduler, loras, torch.float32)
            R2 = lora_pipeline(M, scheduler, loras, torch.float32)
            assert all(torch.equal(R[k], R2[k]) for k in R)
            R64 = lora_pipeline(M, scheduler, loras, torch.float64)
            spec = [{"file": f"lora_{name}_{'kohya' if layers is kohya else 'peft'}.safetensors", "weight": w}
                    for layers, w in loras]
            keep = ("prompt_embeds", "final_latents", "image_uint8")
            cases.append({"id": f"{name}/{cid}", "model": f"models/{name}", "sampler": "euler", "seed": 5, "steps": 8,
                          "prompt": PROMPT, "guidance_scale": 7.5, "loras": spec,
                          "tensors": {k: st.add(f"{name}/{cid}/{k}", R[k]) for k in keep},
                          "f32_vs_f64": {"final_latents": mg.diff(R["final_latents"], R64["final_latents"]),
                                         "prompt_embeds": mg.diff(R["prompt_embeds"], R64["prompt_embeds"])},
                          "change_from_base": {"final_latents_max_abs": float((R["final_latents"] -
                                                                              base["final_latents"]).abs().max())}})
            print(f"   {name}/{cid}: f32-vs-f64 latents {cases[-1]['f32_vs_f64']['final_latents']['max_abs']:.2e}, "
                  f"change from base {cases[-1]['change_from_base']['final_latents_max_abs']:.3f}")
    st.save("lora", {"description": "Random low-rank LoRAs for the tiny models in both file formats (kohya/webui: "
                                    "lora_unet_*/lora_te_* .lora_down/.lora_up/.alpha, linear and conv incl. 3x3; "
                                    "diffusers/PEFT: unet.*/text_encoder.* .lora_A/.lora_B, no alpha = rank), "
                                    "merged W + w*(alpha/rank)*up@down by the formula (diffusers' fuse_lora needs "
                                    "PEFT, absent here; diffusers' own kohya key converter checks the names), then "
                                    "make_goldens.run_pipeline (txt2img, euler, 8 steps).",
                     "versions": mg.versions(), "files": files, "cases": cases})


# ---- inpainting --------------------------------------------------------------------------------
INPAINT_DIR = HERE / "tiny-sd1-inpaint"


def build_inpaint_unet(seed=5000):
    """make_tiny_models.build_unet's recipe (random norms, stronger text and time paths, output std
    calibrated to 1) for tiny-sd1's UNet with 9 input channels: latents, mask, masked-image latents.
    Stored in float16 (half the size in the repository); the goldens use the stored weights."""
    import make_tiny_models as mtm
    import tiny_configs as tc
    cfg = dict(tc.TINY_SD1_UNET, in_channels=9)
    torch.manual_seed(seed)
    u = mg.UNet2DConditionModel(**cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    mtm.perturb_norms(u, g)
    with torch.no_grad():
        for n, p in u.named_parameters():
            if ".attn2.to_v.weight" in n or ".attn2.to_out.0.weight" in n:
                p.mul_(2.0)
            if "time_emb_proj.weight" in n:
                p.mul_(3.0)
        x = torch.randn(2, 9, cfg["sample_size"], cfg["sample_size"], generator=g)
        c = torch.randn(2, 77, cfg["cross_attention_dim"], generator=g)
        s = u(x, 500, encoder_hidden_states=c).sample.std().item()
        u.conv_out.weight.mul_(1.0 / s)
        u.conv_out.bias.mul_(1.0 / s)
        for p in u.parameters():
            p.copy_(p.half().float())
    return u


def save_inpaint_unet(u):
    import shutil
    if INPAINT_DIR.exists():
        shutil.rmtree(INPAINT_DIR)
    (INPAINT_DIR / "unet").mkdir(parents=True)
    u.save_config(str(INPAINT_DIR / "unet"))
    sd = {k: v.half().contiguous() for k, v in u.state_dict().items()}
    save_file(sd, str(INPAINT_DIR / "unet" / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    # The original layout, by diffusers' own conversion script (UNet part of a single-file checkpoint).
    conv = common.load_module("convert_to_original", common.diffusers_src() / "scripts" /
                              "convert_diffusers_to_original_stable_diffusion.py")
    ldm = conv.convert_unet_state_dict({k: v for k, v in u.state_dict().items()})
    ldm = {"model.diffusion_model." + k: v.half().contiguous() for k, v in ldm.items()}
    save_file(ldm, str(INPAINT_DIR / "unet_original_layout.fp16.safetensors"), metadata={"format": "pt"})
    # Reload check: diffusers' single-file loader reads the converted tensors back bit for bit.
    back = conv.convert_unet_state_dict(dict(u.state_dict()))
    assert all(torch.equal(back[k].half(), ldm["model.diffusion_model." + k]) for k in back)


def mask_picture(size=64):
    """White = repaint. A rectangle whose edges do not fall on the 8-pixel latent grid, a reddish
    patch whose luma (PIL's L = 0.299R + 0.587G + 0.114B) is below one half (kept) and a greenish
    one above it (repainted)."""
    m = np.zeros((size, size, 3), np.uint8)
    m[5:29, 37:60] = 255
    m[40:52, 4:20] = (200, 60, 60)
    m[40:60, 30:44] = (100, 200, 100)
    return m


def run_inpaint(M, unet, p, dtype, image_png, mask_png):
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint import StableDiffusionInpaintPipeline
    sched = mg.SCHEDULERS[p["scheduler"]].from_config(M.base_sched.config)
    M.to(dtype)
    unet.to(dtype)
    pipe = StableDiffusionInpaintPipeline(vae=M.vae, text_encoder=TE(M.te), tokenizer=vp.Tok(M), unet=unet,
                                          scheduler=sched, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    steps = []

    def on_step(pipe_, i, t, kw):
        steps.append(kw["latents"].clone())
        return kw
    gen = torch.Generator("cpu").manual_seed(p["seed"])
    with torch.no_grad(), DrawInFloat32():
        latents = pipe(prompt=p["prompt"], image=PIL.Image.open(HERE / image_png),
                       mask_image=PIL.Image.open(HERE / mask_png), strength=p["strength"],
                       num_inference_steps=p["num_inference_steps"], guidance_scale=p["guidance_scale"],
                       generator=gen, output_type="latent", callback_on_step_end=on_step).images
        decoded = M.vae.decode(latents / M.vae.config.scaling_factor, return_dict=False)[0]
    R = {"latents": torch.stack(steps), "final_latents": latents, "decoded": decoded}
    pil = pipe.image_processor.postprocess(decoded, output_type="pil")
    R["image_uint8"] = torch.from_numpy(np.stack([np.array(im) for im in pil]))
    M.to(torch.float32)
    unet.to(torch.float32)
    return R


def make_inpaint():
    image_png = "img2img_input.png"
    mask_png = save_png("inpaint_mask.png", mask_picture())
    u9 = build_inpaint_unet()
    save_inpaint_unet(u9)
    M = mg.Models("tiny-sd1")
    base = {"prompt": PROMPT, "seed": 9, "guidance_scale": 7.5, "num_inference_steps": 8}
    runs = [("tiny-sd1", M.unet, "euler_a", "EulerAncestralDiscreteScheduler", 1.0),
            ("tiny-sd1", M.unet, "ddim_strength0.75", "DDIMScheduler", 0.75),
            ("tiny-sd1", M.unet, "dpmpp_2m_strength0.6", "DPMSolverMultistepScheduler", 0.6),
            ("tiny-sd1", M.unet, "heun_strength0.7", "HeunDiscreteScheduler", 0.7),
            ("tiny-sd1-inpaint", u9, "euler", "EulerDiscreteScheduler", 1.0),
            ("tiny-sd1-inpaint", u9, "ddim_strength0.6", "DDIMScheduler", 0.6),
            ("tiny-sd1-inpaint", u9, "euler_a_strength0.8", "EulerAncestralDiscreteScheduler", 0.8)]
    st, cases = Store(), []
    for model, unet, cid, scheduler, strength in runs:
        p = dict(base, scheduler=scheduler, strength=strength)
        R = run_inpaint(M, unet, p, torch.float32, image_png, mask_png)
        R2 = run_inpaint(M, unet, p, torch.float32, image_png, mask_png)
        assert all(torch.equal(R[k], R2[k]) for k in R), cid
        R64 = run_inpaint(M, unet, p, torch.float64, image_png, mask_png)
        u8a, u8b = R["image_uint8"].int(), R64["image_uint8"].int()
        cases.append({"id": f"{model}/{cid}", "model": model, "unet_in_channels": unet.config.in_channels,
                      "params": p, "init_image": image_png, "mask": mask_png,
                      "unet_evaluations": int(R["latents"].shape[0]),
                      "tensors": {k: st.add(f"{model}/{cid}/{k}", v) for k, v in R.items()},
                      "f32_vs_f64": {"final_latents": mg.diff(R["final_latents"], R64["final_latents"]),
                                     "image_uint8_max_diff": int((u8a - u8b).abs().max().item())}})
        print(f"   {model}/{cid}: evals {R['latents'].shape[0]}, f32-vs-f64 latents "
              f"{cases[-1]['f32_vs_f64']['final_latents']['max_abs']:.2e}")
    st.save("inpaint", {"description": "diffusers' StableDiffusionInpaintPipeline (stock; output_type latent, then the "
                                       "VAE decode and its pil postprocess; no overlay) with tests/goldens/"
                                       "img2img_input.png and inpaint_mask.png, on tiny-sd1 (4-channel UNet: the "
                                       "known region re-noised and blended after each step) and tiny-sd1-inpaint "
                                       "(tiny-sd1 with the 9-channel UNet stored beside this file, made by the tiny "
                                       "models' recipe, float16 weights). Per case the latents after every step, the "
                                       "final latents, the decode and the 8-bit image.",
                        "versions": mg.versions(), "cases": cases})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=["img2img", "weighting", "lora", "inpaint"])
    a = ap.parse_args()
    if a.only in (None, "img2img"):
        print("img2img")
        make_img2img()
    if a.only in (None, "weighting"):
        print("prompt weighting")
        make_weighting()
    if a.only in (None, "lora"):
        print("lora")
        make_lora()
    if a.only in (None, "inpaint"):
        print("inpaint")
        make_inpaint()


if __name__ == "__main__":
    main()
