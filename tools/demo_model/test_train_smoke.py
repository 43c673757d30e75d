"""CTest: a few steps of every training stage, then the exported folder must load and generate in
otter (proves train.py, export.py and the engine agree on the file layout). Then the same run
again, interrupted in the middle of the diffusion stage and continued with --resume, must export
byte-identical weights (proves the stages resume from their checkpoints); and the same for the
caption-noise stage.

Exit status 77 (skipped) when /usr/bin/python3 lacks torch/numpy.

  /usr/bin/python3 tools/demo_model/test_train_smoke.py OTTER_BINARY
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP = 77
HERE = Path(__file__).resolve().parent


def main() -> int:
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
        from PIL import Image  # noqa: F401
    except ImportError as e:
        print(f"SKIP: {sys.executable} lacks {e.name} (apt-get install python3-torch python3-numpy python3-pil)")
        return SKIP
    with tempfile.TemporaryDirectory(prefix="otter-smoke-") as tmp:
        model = Path(tmp) / "model"
        res = subprocess.run([sys.executable, str(HERE / "train.py"), "--smoke", "--work", tmp, "--out", str(model)],
                             capture_output=True, text=True)
        print(res.stdout[-2000:], res.stderr[-2000:])
        if res.returncode != 0:
            print("FAIL: train.py --smoke exited with", res.returncode)
            return 1
        for f in ("model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                  "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                  "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "tokenizer/vocab.json",
                  "tokenizer/merges.txt"):
            if not (model / f).is_file():
                print(f"FAIL: exported model lacks {f}")
                return 1
        if len(sys.argv) > 1:
            out = Path(tmp) / "smoke.png"
            res = subprocess.run([sys.argv[1], "generate", "-q", "-m", str(model), "-p", "a red circle",
                                  "--steps", "2", "-o", str(out)], capture_output=True, text=True)
            if res.returncode != 0 or not out.is_file():
                print("FAIL: otter could not generate from the exported model:\n", res.stderr)
                return 1
            print("otter generated", out)
        # The two diffusion stages: the second also has to find the first's finished weights on resume.
        for stage in ("diffusion", "caption_noise"):
            if not resumed_run_matches(Path(tmp), model, stage):
                return 1
    return 0


def resumed_run_matches(tmp: Path, model: Path, stage: str) -> bool:
    work, out = tmp / f"interrupted-{stage}", tmp / f"resumed-{stage}"
    cmd = [sys.executable, str(HERE / "train.py"), "--smoke", "--work", str(work), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OTTER_DEMO_INTERRUPT": f"{stage}:2"})
    if first.returncode != 75 or out.exists():
        print("FAIL: the interrupted run should stop with status 75 before exporting; got", first.returncode,
              first.stdout[-1000:], first.stderr[-1000:])
        return False
    second = subprocess.run(cmd + ["--resume"], capture_output=True, text=True)
    print(second.stdout[-800:])
    if second.returncode != 0 or f"{stage}: resumed at step 2" not in second.stdout:
        print(f"FAIL: --resume did not continue the {stage} stage from step 2:", second.stderr[-1000:])
        return False
    for f in sorted(model.rglob("*.safetensors")):
        other = out / f.relative_to(model)
        if f.read_bytes() != other.read_bytes():
            print(f"FAIL: {f.relative_to(model)} differs between the uninterrupted run and the one resumed in {stage}")
            return False
    print(f"run resumed in {stage} exported the uninterrupted run's weights, byte for byte")
    return True


if __name__ == "__main__":
    sys.exit(main())
