"""Measures what the bundled model does with size words, position words and two-object prompts, at
guidance scales 1 and 7.5, through the otter CLI (the same noise per prompt at both scales).

Prompts come from the held-out stream (shapes.py seed EVAL_SEED) in the training captions' grammar:
  size:     "a {small|large} {colour} {shape} on a {background} background"  (single shapes)
  position: "a {colour} {shape} {in the top left corner|...} on a {background} background"
  two:      "a {colour} {shape} and a {colour} {shape} on a {background} background"
and the judge (judge.py, 64x64 layout pixels) says:
  size:     the main object's bounding box (its longer side) is on the asked side of SIZE_SPLIT
            pixels (on clean renders of these prompts small shapes span 11-18, large ones 22-30);
  position: the main object's centre lies in the asked cell of the 3x3 grid;
  two:      the two largest objects are the two asked (shape, colour) pairs, in any order.
Each kind also needs the background right.

Writes docs/guidance/composition.md and composition.json.

  /usr/bin/python3 tools/demo_model/eval_composition.py [--prompts 100] [--otter PATH]
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
from eval_guidance import judge_article

SCALES = [1.0, 7.5]
PER_CALL = 25
BASE_SEED = 7000
SIZE_SPLIT = 22  # pixels at 64x64, between the small and large shapes' extents
OUT = otter_cli.REPO / "docs" / "guidance"


def noun(color: str, shape: str, size: str | None = None) -> str:
    words = ([size] if size else []) + [color, shape]
    return f"{judge_article(words[0])} {' '.join(words)}"


def prompts_of_kind(kind: str, n: int) -> list[dict]:
    out = []
    for s in shapes.samples(dataset.EVAL_SEED, draw=False):
        bg = f"on {judge_article(s.background)} {s.background} background"
        if kind in ("size", "position") and len(s.shapes) == 1:
            if kind == "size":
                text = f"{noun(s.colors[0], s.shapes[0], s.sizes[0])} {bg}"
            else:
                text = f"{noun(s.colors[0], s.shapes[0])} {shapes.POSITION_PHRASES[s.positions[0]]} {bg}"
            out.append({"prompt": text, "shapes": s.shapes, "colors": s.colors, "background": s.background,
                        "size": s.sizes[0], "position": s.positions[0]})
        elif kind == "two" and len(s.shapes) == 2 and s.shapes[0] != s.shapes[1]:
            text = f"{noun(s.colors[0], s.shapes[0])} and {noun(s.colors[1], s.shapes[1])} {bg}"
            out.append({"prompt": text, "shapes": s.shapes, "colors": s.colors, "background": s.background})
        if len(out) == n:
            return out
    raise AssertionError("unreachable")


def cell_of(center: tuple[float, float]) -> str:
    third = shapes.LAYOUT_SIZE / 3
    col = min(2, int(center[0] // third))
    row = min(2, int(center[1] // third))
    return shapes.POSITIONS[3 * row + col]


def score(kind: str, j: judge.Judgement, want: dict) -> bool:
    if j.background != want["background"] or not j.objects:
        return False
    m = j.main
    if kind == "size":
        return (m.shape, m.color) == (want["shapes"][0], want["colors"][0]) and \
            (m.extent < SIZE_SPLIT) == (want["size"] == "small")
    if kind == "position":
        return (m.shape, m.color) == (want["shapes"][0], want["colors"][0]) and cell_of(m.center) == want["position"]
    got = sorted((o.shape, o.color) for o in j.objects[:2])
    return got == sorted(zip(want["shapes"], want["colors"]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--otter")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--model", default=str(otter_cli.REPO / "models" / "otter-shapes"))
    args = ap.parse_args()
    otter = otter_cli.find_otter(args.otter)
    t0 = time.time()
    table, records = {}, {}
    for kind in ("size", "position", "two"):
        prompts = prompts_of_kind(kind, args.prompts)
        for scale in SCALES:
            images = []
            for k in range(0, len(prompts), PER_CALL):
                images += otter_cli.generate(otter, [p["prompt"] for p in prompts[k:k + PER_CALL]],
                                             BASE_SEED + k // PER_CALL, scale, steps=args.steps, model=args.model)
            hits = [bool(score(kind, judge.judge(im), p)) for im, p in zip(images, prompts)]
            table.setdefault(kind, {})[str(scale)] = float(np.mean(hits))
            records.setdefault(kind, {})[str(scale)] = hits
            print(f"{kind:8s} scale {scale:4g}: {np.mean(hits):.3f}", flush=True)
        records[kind]["prompts"] = [p["prompt"] for p in prompts]
    seconds = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "composition.json").write_text(json.dumps({"scales": SCALES, "table": table, "per_image": records},
                                                          separators=(",", ":")))
    n = args.prompts
    lines = ["# Sizes, positions and two objects: what guidance adds", "",
             f"Generated by `tools/demo_model/eval_composition.py` ({n} held-out prompts per kind, "
             f"{args.steps} DDIM steps, f32, the same noise at both scales; {seconds / 60:.1f} min). "
             "A hit needs the background right too; see the script for the judge's rules.", "",
             "| prompts | scale 1 | scale 7.5 |", "|---|---:|---:|"]
    names = {"size": "size (\"a small red circle …\")", "position": "position (\"… in the top left corner …\")",
             "two": "two objects (\"a red circle and a blue square …\")"}
    for kind in ("size", "position", "two"):
        lines.append(f"| {names[kind]} | {table[kind]['1.0']:.3f} | {table[kind]['7.5']:.3f} |")
    se = 0.5 / np.sqrt(n)
    lines += ["", f"Standard error of each share: at most ±{se:.3f} ({n} prompts)."]
    (args.out / "composition.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'composition.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
