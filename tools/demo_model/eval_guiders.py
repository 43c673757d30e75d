"""Compares otter's guidance methods on the bundled model at equal UNet work, through the otter CLI.

Every method gets the same budget of UNet rows per image as classic CFG at 20 steps (40 rows): a
method that evaluates more rows per step (PAG: 3) runs fewer steps, one that evaluates fewer (a
guidance interval) runs more; the step count is the largest whose measured row count (the CLI's
own report, one image) stays within the budget. Adaptive skipping decides its rows per batch and
is run at 20 steps, its rows reported. Prompts, noise and judge as eval_guidance.py (held-out
"a {colour} {shape} on a {background} background", one noise per prompt, the same for every
method); measured per method: shape/colour/background accuracy, adherence (their mean), and the
share of saturated pixel values (0 or 255 in the 8-bit image: what strong guidance over-exposes).

Writes docs/guidance/methods.md (table), methods.png (plot), methods_grid.png (same noise, every
method) and methods.json.

  /usr/bin/python3 tools/demo_model/eval_guiders.py [--prompts 200] [--otter PATH]

The plots need matplotlib (Debian: python3-matplotlib), as eval_guidance.py's do.
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

import eval_guidance
import judge
import otter_cli

BUDGET = 40  # UNet rows per image: classic CFG, 20 steps

# (label, recipe or None for classic CFG at 7.5, sampler or None)
METHODS = [
    ("CFG 7.5", None, None),
    ("cfg_zero_star", "cfg_zero_star:scale=7.5", None),
    ("apg (eta 0)", "apg:scale=7.5,eta=0", None),
    ("tcfg", "tcfg:scale=7.5", None),
    ("mambo", "mambo", None),
    ("apg_mix", "apg_mix", None),
    ("fdg [10, 5]", "fdg", None),
    ("cfg_pp 0.6 (ddim)", "cfg_pp:scale=0.6", "ddim"),
    ("pag mid (every step)", "pag:scale=7.5,pag_scale=3,layers=mid", None),
    ("PAG guider mid", "PerturbedAttentionGuidance:scale=7.5,layers=mid", None),
    ("seg mid", "seg:scale=7.5,layers=mid", None),
    ("slg mid", "slg:scale=7.5,layers=mid", None),
    ("autoguidance mid", "autoguidance:scale=7.5,layers=mid", None),
    ("CFG, interval 0.28..5.42", "cfg:scale=7.5;interval=0.28..5.42", None),
    ("CFG, adaptive 0.999", "cfg:scale=7.5;adaptive=0.999", None),
]


def rows_of(log: str) -> int:
    m = re.search(r", (\d+) UNet rows", log)
    if not m:
        raise RuntimeError("no row count in otter's log:\n" + log)
    return int(m.group(1))


def steps_for(otter, recipe, sampler, model) -> tuple[int, int]:
    """The most steps whose rows per image fit the budget (20 for adaptive skipping), and its rows."""
    def rows(steps):
        log = []
        otter_cli.generate(otter, ["a red circle"], 1, 7.5, steps=steps, model=model, sampler=sampler,
                           guidance=recipe, log=log)
        return rows_of(log[0])
    if recipe and "adaptive=" in recipe:
        return 20, rows(20)
    best = None
    for steps in range(8, 60):
        r = rows(steps)
        if r > BUDGET:
            break
        best = (steps, r)
    return best


def saturated(images) -> float:
    a = np.stack(images)
    return float(np.mean((a == 0) | (a == 255)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--otter")
    ap.add_argument("--out", type=Path, default=eval_guidance.OUT)
    ap.add_argument("--model", default=str(otter_cli.REPO / "models" / "otter-shapes"))
    args = ap.parse_args()
    otter = otter_cli.find_otter(args.otter)
    args.out.mkdir(parents=True, exist_ok=True)
    prompts = eval_guidance.eval_prompts(args.prompts)
    t0 = time.time()
    table, images_by_method = [], {}
    for label, recipe, sampler in METHODS:
        ts = time.time()
        steps, rows = steps_for(otter, recipe, sampler, args.model)
        images, logs = [], []
        for k in range(0, len(prompts), eval_guidance.PER_CALL):
            chunk = [p["prompt"] for p in prompts[k:k + eval_guidance.PER_CALL]]
            images += otter_cli.generate(otter, chunk, eval_guidance.BASE_SEED + k // eval_guidance.PER_CALL, 7.5,
                                         steps=steps, model=args.model, sampler=sampler, guidance=recipe, log=logs)
        batch_rows = sum(rows_of(l) for l in logs) / len(prompts)
        scores = [eval_guidance.score(judge.judge(im), p) for im, p in zip(images, prompts)]
        r = {k: float(np.mean([s[k] for s in scores])) for k in ("shape", "color", "background", "all")}
        r.update(label=label, recipe=recipe or "--cfg-scale 7.5", sampler=sampler or "ddim (the model's)", steps=steps,
                 rows_per_image=batch_rows, adherence=(r["shape"] + r["color"] + r["background"]) / 3,
                 saturated=saturated(images))
        table.append(r)
        images_by_method[label] = images
        print(f"{label:26s} steps {steps:2d} rows {batch_rows:5.1f}  adherence {r['adherence']:.3f}  all {r['all']:.3f}"
              f"  saturated {r['saturated']:.4f}  ({time.time() - ts:.0f} s)", flush=True)
    seconds = time.time() - t0
    (args.out / "methods.json").write_text(json.dumps({"budget_rows": BUDGET, "prompts": len(prompts), "table": table},
                                                      indent=1))
    write_markdown(table, len(prompts), seconds, args.out / "methods.md")
    save_plot(table, args.out / "methods.png", len(prompts))
    save_grid(images_by_method, prompts, args.out / "methods_grid.png")
    print(f"wrote {args.out}")


def write_markdown(table, n, seconds, path: Path):
    se = lambda p: (p * (1 - p) / n) ** 0.5  # noqa: E731
    lines = ["# Guidance methods at equal UNet work", "",
             f"{n} held-out prompts (as in [adherence.md](adherence.md)), one noise each, the same for every method; "
             f"every method within {BUDGET} UNet rows per image (classic CFG at 20 steps): methods that evaluate "
             "more rows per step run fewer steps. Adaptive skipping runs 20 steps and reports the rows it took. "
             "Model `models/otter-shapes`, f32, generated by the `otter` CLI and read by `tools/demo_model/judge.py`; "
             "saturated = share of 8-bit values at 0 or 255. ± is one binomial standard error.", "",
             "| method | recipe | sampler | steps | rows/image | shape | colour | background | all three | adherence "
             "| saturated |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['label']} | `{r['recipe']}` | {r['sampler']} | {r['steps']} | {r['rows_per_image']:.1f} | "
                     + " | ".join(f"{r[k]:.3f}" for k in ("shape", "color", "background"))
                     + f" | {r['all']:.3f} ± {se(r['all']):.3f} | {r['adherence']:.3f} | {r['saturated']:.4f} |")
    lines += ["", "![methods](methods.png)", "", "![same noise, every method](methods_grid.png)", "",
              f"Evaluation time: {seconds / 60:.1f} min; reproduce with "
              "`/usr/bin/python3 tools/demo_model/eval_guiders.py`.", ""]
    path.write_text("\n".join(lines))


def save_plot(table, path: Path, n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in table:
        ax.scatter(r["saturated"], r["adherence"], s=30)
        ax.annotate(r["label"], (r["saturated"], r["adherence"]), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set_xlabel("share of saturated 8-bit values (0 or 255)")
    ax.set_ylabel("adherence (mean of shape, colour, background)")
    ax.grid(alpha=0.3)
    ax.set_title(f"otter-shapes: guidance methods at {BUDGET} UNet rows per image ({n} prompts)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_grid(images_by_method, prompts, path: Path, rows: int = 6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(images_by_method)
    fig, axes = plt.subplots(rows, len(labels), figsize=(0.95 * len(labels) + 2.2, 1.0 * rows + 0.8))
    for i in range(rows):
        for c, label in enumerate(labels):
            ax = axes[i][c]
            ax.imshow(images_by_method[label][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(label, fontsize=6, rotation=30, ha="left")
        axes[i][0].set_ylabel(prompts[i]["prompt"].replace(" on ", "\non "), rotation=0, ha="right", va="center",
                              fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
