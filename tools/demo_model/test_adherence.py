"""CTest: the bundled model, run by the otter binary, follows its prompts the way CFG should.

Generates the first PROMPTS held-out evaluation prompts (see eval_guidance.py) at guidance scales
7.5, 1, 0 and -3 with the same noise, judges every image and asserts
  * adherence at 7.5 is at least THRESHOLD (set from the measured curve in docs/guidance/adherence.md,
    with room for sampling noise on this small set),
  * adherence(7.5) >= adherence(1) + GAIN   (guidance sharpens prompt following),
  * adherence(-3)  < adherence(0)   (negative guidance pushes away from the prompt).
Adherence = mean of the judge's shape, colour and background accuracies.

Exit status 77 (reported by CTest as skipped) when numpy/PIL are missing or the model is absent.

  /usr/bin/python3 tools/demo_model/test_adherence.py OTTER_BINARY [MODEL_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

SKIP = 77
PROMPTS = 24
THRESHOLD = 0.9  # measured on 200 prompts: 0.975 at 7.5, 0.543 at 1 (docs/guidance/adherence.md);
# on these 24 prompts 0.986 (71 of 72 judgements right) and 0.611 at 1. 0.9 is about 6 wrong
# judgements more than measured: room for other CPUs' rounding, none for a broken model (version 1
# of the model measured 0.625 on these prompts).
GAIN = 0.2  # what guidance must add from scale 1 to 7.5 (the model's target; measured 0.432 on 200
# prompts, 0.375 on these 24, where one standard error of the difference is about 0.06). Trained on
# true caption pairs only, the model gained 0.053 (0.937 -> 0.990) and would fail this.


def main() -> int:
    try:
        import numpy  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {sys.executable} lacks {e.name} (apt-get install python3-numpy python3-pil)")
        return SKIP
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eval_guidance
    import judge
    import otter_cli

    otter = Path(sys.argv[1]) if len(sys.argv) > 1 else otter_cli.find_otter()
    model = Path(sys.argv[2]) if len(sys.argv) > 2 else otter_cli.REPO / "models" / "otter-shapes"
    if not (model / "model_index.json").exists():
        print(f"SKIP: bundled model not found at {model}")
        return SKIP
    prompts = eval_guidance.eval_prompts(PROMPTS)
    texts = [p["prompt"] for p in prompts]
    adherence = {}
    for scale in (7.5, 1.0, 0.0, -3.0):
        images = otter_cli.generate(otter, texts, eval_guidance.BASE_SEED, scale, model=str(model))
        scores = [eval_guidance.score(judge.judge(im), p) for im, p in zip(images, prompts)]
        per_attr = {k: sum(s[k] for s in scores) / len(scores) for k in ("shape", "color", "background", "all")}
        adherence[scale] = (per_attr["shape"] + per_attr["color"] + per_attr["background"]) / 3
        print(f"scale {scale:4g}: adherence {adherence[scale]:.3f} "
              + " ".join(f"{k} {v:.3f}" for k, v in per_attr.items()))
    failures = []
    if adherence[7.5] < THRESHOLD:
        failures.append(f"adherence at 7.5 is {adherence[7.5]:.3f}, below the threshold {THRESHOLD}")
    if adherence[7.5] < adherence[1.0] + GAIN:
        failures.append(f"adherence at 7.5 ({adherence[7.5]:.3f}) is not {GAIN} above scale 1 ({adherence[1.0]:.3f})")
    if not adherence[-3.0] < adherence[0.0]:
        failures.append(f"adherence at -3 ({adherence[-3.0]:.3f}) is not below scale 0 ({adherence[0.0]:.3f})")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
