"""Measures prompt adherence of the bundled model against the guidance scale, through the otter CLI.

Prompts: "a {colour} {shape} on a {background} background" with the labels of the first N
single-shape samples of the held-out stream (shapes.py seed EVAL_SEED, never used in training;
the *strings* can still occur among the training captions -- there are only 280 of them -- but
the (prompt, noise) pairs are new). Each prompt gets its own noise (row i of the seed's draw),
the same at every scale. Every image is read by judge.py and compared with the prompt.

Writes docs/guidance/: adherence.md (table), adherence.png (plot), grid_*.png (same noise across
scales) and results.json (every judgement), plus the negative-prompt test ("a circle" with
negative "red" vs no negative: share of red circles).

  /usr/bin/python3 tools/demo_model/eval_guidance.py [--prompts 200] [--otter PATH]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import dataset
import judge
import otter_cli
import shapes

SCALES = [-3.0, 0.0, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0]
PER_CALL = 25  # prompts per otter call
BASE_SEED = 5000
OUT = otter_cli.REPO / "docs" / "guidance"


def eval_prompts(n: int) -> list[dict]:
    out = []
    for s in shapes.samples(dataset.EVAL_SEED, draw=False):
        if len(s.shapes) == 1:
            out.append({"prompt": f"{judge_article(s.colors[0])} {s.colors[0]} {s.shapes[0]} on "
                                  f"{judge_article(s.background)} {s.background} background",
                        "shape": s.shapes[0], "color": s.colors[0], "background": s.background})
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def judge_article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def score(j: judge.Judgement, want: dict) -> dict:
    m = j.main
    shape_ok = m is not None and m.shape == want["shape"]
    color_ok = m is not None and m.color == want["color"]
    bg_ok = j.background == want["background"]
    return {"shape": shape_ok, "color": color_ok, "background": bg_ok, "all": shape_ok and color_ok and bg_ok,
            "judged": {"background": j.background, "objects": [o.__dict__ for o in j.objects]}}


def run_scale(otter, prompts, scale, steps, model):
    images = []
    for k in range(0, len(prompts), PER_CALL):
        chunk = [p["prompt"] for p in prompts[k:k + PER_CALL]]
        images += otter_cli.generate(otter, chunk, BASE_SEED + k // PER_CALL, scale, steps=steps, model=model)
    return images


def negative_prompt_test(otter, n: int, steps: int, model: str, scale: float = 7.5) -> dict:
    """"a circle" (no colour asked for) with negative prompt = each palette colour in turn, against
    no negative prompt, on the same n noises: how often is the circle that colour?"""

    def judged(negative):
        imgs = []
        for k in range(0, n, PER_CALL):
            imgs += otter_cli.generate(otter, ["a circle"] * min(PER_CALL, n - k), BASE_SEED + 100 + k // PER_CALL,
                                       scale, negative=negative, steps=steps, model=model)
        return [judge.judge(im).main for im in imgs]

    def summary(mains, color):
        return {"images": len(mains), "color": sum(1 for m in mains if m and m.color == color),
                "color_circles": sum(1 for m in mains if m and m.color == color and m.shape == "circle"),
                "circles": sum(1 for m in mains if m and m.shape == "circle")}

    base = judged("")
    out = {"colors_without_negative": {c: sum(1 for m in base if m and m.color == c) for c in shapes.COLORS}}
    for c in shapes.COLORS:
        out[c] = {"without": summary(base, c), "with": summary(judged(c), c)}
    return out


def save_grid(images_by_scale, rows: list[int], labels: list[str], path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(SCALES), figsize=(1.1 * len(SCALES) + 2.2, 1.1 * len(rows) + 0.4))
    for r, i in enumerate(rows):
        for c, s in enumerate(SCALES):
            ax = axes[r][c]
            ax.imshow(images_by_scale[s][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"{s:g}", fontsize=9)
        axes[r][0].set_ylabel(labels[r], rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle("guidance scale", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_plot(table, path: Path, n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("adherence", "adherence (mean of the three)"), ("all", "all three correct"), ("shape", "shape"),
                       ("color", "colour"), ("background", "background")):
        ax.plot(SCALES, [table[s][key] for s in SCALES], marker="o", label=label,
                lw=2.5 if key in ("adherence", "all") else 1, ls="-" if key in ("adherence", "all") else "--")
    ax.set_xlabel("guidance scale s  (eps = uncond + s (cond - uncond))")
    ax.set_ylabel("share of images")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"otter-shapes: prompt adherence vs guidance ({n} prompts, 20 steps)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_markdown(table, neg, ceiling, n, steps, seconds, per_image, path: Path):
    se = lambda p: (p * (1 - p) / n) ** 0.5  # noqa: E731
    lines = ["# Guidance, measured", "",
             f"{n} held-out prompts of the form \"a {{colour}} {{shape}} on a {{background}} background\", one "
             f"noise seed each (the same at every scale), {steps} steps with the model's scheduler (DDIM), "
             "generated by the `otter` CLI from `models/otter-shapes` and read by `tools/demo_model/judge.py`. "
             "Shape and colour are those of the largest object; adherence is the mean of the shape, colour and "
             "background accuracies; ± is one binomial standard error.", "",
             "| scale | shape | colour | background | all three correct | adherence |", "|---:|---:|---:|---:|---:|---:|"]
    for s in SCALES:
        r = table[s]
        lines.append(f"| {s:g} | " + " | ".join(f"{r[k]:.3f} ± {se(r[k]):.3f}"
                                                 for k in ("shape", "color", "background", "all"))
                     + f" | {r['adherence']:.3f} |")
    if ceiling:
        for key, label in (("clean", "clean renders behind the prompts (judge check)"),
                           ("vae_roundtrip", "the same renders through the model's VAE (decoder ceiling)")):
            c = ceiling[key]
            lines.append(f"| {label} | {c['shape']:.3f} | {c['color']:.3f} | {c['background']:.3f} | | |")
    lines += ["", "![adherence](adherence.png)", "",
              "## Negative prompt", "",
              f"Prompt \"a circle\" (no colour asked for) at scale 7.5 on {neg['red']['without']['images']} noises, "
              "without a negative prompt and with the negative prompt set to one colour name; counted: images whose "
              "main object has that colour (and is judged a circle).", "",
              "| negative prompt | that colour, no negative | that colour, with negative | "
              "that-colour circles, no negative | that-colour circles, with negative |",
              "|---|---:|---:|---:|---:|"]
    for c in shapes.COLORS:
        w, wo = neg[c]["with"], neg[c]["without"]
        lines.append(f"| {c} | {wo['color']} | {w['color']} | {wo['color_circles']} | {w['color_circles']} |")
    tot_wo = sum(neg[c]["without"]["color"] for c in shapes.COLORS)
    tot_w = sum(neg[c]["with"]["color"] for c in shapes.COLORS)
    lines += ["", f"Summed over the colours: {tot_wo} images of the named colour without the negative prompt, "
                  f"{tot_w} with it.", "",
              "## Same noise, different scales", "", "![grid](grid_prompts.png)", "",
              f"Evaluation time: {seconds / 60:.1f} min for {n * len(SCALES)} images "
              f"({per_image:.2f} s per image including model loading per {PER_CALL}-prompt call), "
              "reproduce with `/usr/bin/python3 tools/demo_model/eval_guidance.py`.", ""]
    path.write_text("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--negative-images", type=int, default=50)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--otter")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--model", default=str(otter_cli.REPO / "models" / "otter-shapes"))
    args = ap.parse_args()
    otter = otter_cli.find_otter(args.otter)
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = eval_prompts(args.prompts)
    t0 = time.time()
    images_by_scale, table, records = {}, {}, {}
    for s in SCALES:
        ts = time.time()
        images = run_scale(otter, prompts, s, args.steps, args.model)
        images_by_scale[s] = images
        scores = [score(judge.judge(im), p) for im, p in zip(images, prompts)]
        table[s] = {k: float(np.mean([sc[k] for sc in scores])) for k in ("shape", "color", "background", "all")}
        table[s]["adherence"] = (table[s]["shape"] + table[s]["color"] + table[s]["background"]) / 3
        records[str(s)] = scores
        print(f"scale {s:5g}: " + ", ".join(f"{k} {v:.3f}" for k, v in table[s].items())
              + f"  ({time.time() - ts:.0f} s)", flush=True)
    seconds = time.time() - t0
    per_image = seconds / (len(prompts) * len(SCALES))
    neg = negative_prompt_test(otter, args.negative_images, args.steps, args.model)
    try:
        import judge_ceiling

        ceiling = judge_ceiling.measure(Path(args.model), len(prompts))
        print("judge ceiling:", ceiling)
    except ImportError as e:
        print(f"no decoder ceiling: {e}")
        ceiling = None
    print("negative prompt test:", json.dumps(neg))
    rows = list(range(min(8, len(prompts))))
    save_grid(images_by_scale, rows, [prompts[i]["prompt"].replace(" on ", "\non ") for i in rows],
              args.out / "grid_prompts.png")
    save_plot(table, args.out / "adherence.png", len(prompts))
    write_markdown(table, neg, ceiling, len(prompts), args.steps, seconds, per_image, args.out / "adherence.md")
    (args.out / "results.json").write_text(json.dumps({"scales": SCALES, "prompts": prompts, "table": table,
                                                        "negative_prompt": neg, "judge_ceiling": ceiling,
                                                        "per_image": records}, separators=(",", ":")))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
