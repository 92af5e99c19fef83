"""The mini reproduction's plan: its runs as the commands a user would type (:class:`Stage`), the options and
folders they share (:class:`Plan`), and the Hydra overrides of each training (:func:`train_overrides`).
Read by the pipeline that runs the stages and by the report that prints them."""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurmap.experiments.mini.common import shown
from neurmap.experiments.mini.options import MiniOptions

__all__ = [
    "CEILING",
    "COST",
    "EVAL_SET",
    "MOTION_VARIANTS",
    "Plan",
    "Stage",
    "duration",
    "loadavg",
    "rel",
    "train_overrides",
]

#: Variants with a motion network M: they start M from the motion-pretraining run.
MOTION_VARIANTS = ("neurmap", "net2", "net3", "oracle_motion")
#: Relative cost of a fine-tune (NeurMAP-like iterations run D, M and N): sweeps list the longest first, so
#: the joblib launcher starts them first.
COST = {"neurmap": 4, "oracle_motion": 4, "net3": 4, "net2": 3, "net1": 2, "baseline": 1}
#: The ceiling's paired data: the target family's own pairs (unavailable to a real user).
CEILING = ["variant=baseline", "data.paired.records.root=${paths.mini}/kernel_synth/train"]
EVAL_SET = "kernel_synth"  # the test set of data=kernel_synth


@dataclass
class Stage:
    """One step: its name, the command a user would type (``env`` shown as a prefix), how long it took."""

    name: str
    argv: list[str]  # after "python": ["-m", module, *overrides]
    env: dict[str, str] = field(default_factory=dict)
    out: Path | None = None  # the run or sweep folder it writes (emptied before it runs)
    seconds: float = math.nan
    note: str = ""

    @property
    def command(self) -> str:
        """The shell line of the stage (a ``#`` comment for a step with no command of its own)."""
        if not self.argv:
            return f"# {self.name}: {self.note or 'in process'}"
        prefix = [f"{k}={v}" for k, v in self.env.items()]
        return shown(" ".join([*prefix, "python", *(shlex.quote(a) for a in self.argv)]))


@dataclass
class Plan:
    """The runs of one reproduction: options, folders, the start, the stages as they ran."""

    opts: MiniOptions
    work: Path
    start_weights: str = ""  # the start the fine-tunes load (release folder or the scratch run's last.ckpt)
    released: bool = False
    stages: list[Stage] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    motion_ckpt: str = ""  # the motion-pretraining run's last.ckpt ("" = M starts from scratch)
    ckpts: dict[str, str] = field(default_factory=dict)  # run key ("start", variant) -> checkpoint evaluated
    load: list[float] = field(default_factory=list)  # 1-min load average at the start and at the end
    configs: dict[str, Any] = field(default_factory=dict)  # composed fine-tune config, for the report

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    @property
    def backbone(self) -> str:
        return self.opts.backbone or "dmphn_1_2_4"

    def path(self, *parts: str) -> str:
        """A path under the work folder as the commands show it (relative to the current folder when below it)."""
        return rel(self.work.joinpath(*parts))


def rel(path: Path) -> str:
    """``path`` relative to the current folder when below it (shorter commands), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on this platform
        return math.nan


def duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)} min {sec:04.1f} s" if minutes else f"{sec:.1f} s"


# -------------------------------------------------------------------------------------------- commands


def train_overrides(plan: Plan, experiment: str, variants: Sequence[str] = (), motion: bool = False) -> list[str]:
    """Hydra overrides of a training (``variants``: one value, or several for a multirun), without the run
    folder and the launcher; ``motion`` starts M from the motion-pretraining run."""
    opts = plan.opts
    args = [f"experiment={experiment}"]
    if variants:
        args.append(f"variant={','.join(variants)}")
    if opts.backbone and experiment != "mini_motion":
        args.append(f"backbone={opts.backbone}")
    args += [f"seed={opts.seed}", f"paths.mini={rel(plan.data_dir)}"]
    iterations = {"mini_scratch": opts.scratch_iterations, "mini_motion": opts.motion_iterations}.get(
        experiment, opts.iterations
    )
    if iterations is not None:
        args.append(f"iterations={iterations}")
    if experiment == "mini_motion":
        return [*args, *opts.motion_set]
    if experiment == "mini_neurmap":
        args.append(f"backbone.pretrained={_value(plan.start_weights) or 'null'}")
        if motion and plan.motion_ckpt:
            args.append(f"model.motion_pretrained={_value(plan.motion_ckpt)}")
    return [*args, *opts.set]


def _value(path: str) -> str:
    """A path as a Hydra override value: quoted when it holds characters of the override grammar
    (``best-step=2250.ckpt``)."""
    return f"'{path}'" if any(c in path for c in "=,[]{}()'\" ") else path


def joblib_overrides(opts: MiniOptions, group: str) -> list[str]:
    """Launcher overrides of a multirun: joblib with ``--jobs`` processes, or Hydra's sequential default."""
    return [group, f"hydra.launcher.n_jobs={opts.jobs}"] if opts.jobs > 1 else []


def thread_env(opts: MiniOptions) -> dict[str, str]:
    """Torch threads of each job of a multirun (``--threads``)."""
    return {"OMP_NUM_THREADS": str(opts.threads)}
