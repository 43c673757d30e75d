"""Mid-stage checkpoints: a training stage interrupted at any point resumes from its last save and
ends with the same weights as an uninterrupted run.

A save holds everything the loop's future depends on: the modules' weights, the optimiser's moments,
the stage's random generator and the next step. Every random draw of a stage comes from its own
seeded generator, so restoring that generator's state restores the exact stream of batches,
timesteps and noise. Saves are written to a temporary file and renamed, so a kill during a save
leaves the previous checkpoint intact.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Test hook: OTTER_DEMO_INTERRUPT=STAGE:STEP makes the run exit with INTERRUPTED right after the
# checkpoint that follows STEP steps of STAGE (vae, decoder, diffusion, caption_noise), as a kill would, so the
# smoke test can prove that --resume ends with the uninterrupted run's weights.
INTERRUPTED = 75


class StageCheckpoint:
    def __init__(self, path: Path | None, every: int):
        self.path = Path(path) if path else None
        self.every = every

    def load(self, modules: dict, opt, generator: torch.Generator, note=print) -> int:
        """Restores the saved state into `modules`, `opt` and `generator` and says so through
        `note`; returns the step to continue from (0 when there is no checkpoint)."""
        if self.path is None or not self.path.exists():
            return 0
        state = torch.load(self.path)
        for name, m in modules.items():
            m.load_state_dict(state["modules"][name])
        opt.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        first = int(state["next_step"])
        note(f"{self.path.stem}: resumed at step {first}")
        return first

    def maybe_save(self, step: int, modules: dict, opt, generator: torch.Generator) -> None:
        """Saves after `step` (0-based) every `every` steps."""
        if self.path is None or (step + 1) % self.every != 0:
            return
        state = {"modules": {n: m.state_dict() for n, m in modules.items()}, "optimizer": opt.state_dict(),
                 "generator": generator.get_state(), "next_step": step + 1}
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        if os.environ.get("OTTER_DEMO_INTERRUPT") == f"{self.path.stem}:{step + 1}":
            print(f"interrupted after {self.path.stem} step {step + 1} (OTTER_DEMO_INTERRUPT)", flush=True)
            raise SystemExit(INTERRUPTED)

    def done(self) -> None:
        """The stage finished and its result is saved elsewhere: drop the mid-stage state."""
        if self.path is not None and self.path.exists():
            self.path.unlink()


# A stage run without checkpoints (the loops' default): loads nothing, saves nothing.
NO_CHECKPOINT = StageCheckpoint(None, 1)
