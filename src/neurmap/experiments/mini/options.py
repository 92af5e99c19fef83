"""The mini reproduction's command-line options: every number of the protocol that is not in
``conf/experiment/mini_*.yaml``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from neurmap.experiments.mini.common import METHODS, PROG, ReproError
from neurmap.experiments.mini.data import DEFAULT_SYNTH, DEFAULT_TEST_PHOTOS, DEFAULT_TRAIN_PHOTOS

__all__ = ["MiniOptions", "build_parser", "parse_args"]

DESCRIPTION = (
    "A CPU-scale reproduction of NeurMAP's central claim: fine-tuning the GoPro-trained DMPHN on unpaired data "
    "of an unseen blur family beats supervised fine-tuning on paired data. Writes <out>/<report-name>.md."
)


@dataclass(frozen=True)
class MiniOptions:
    """The options of one reproduction, typed and read-only (:func:`parse_args`; ``--help`` describes each).
    A stage that sizes the runs (``--minutes-per-method``) makes a changed copy with ``dataclasses.replace``."""

    weights: str
    out: str
    work: str
    seed: int
    iterations: int | None
    scratch_iterations: int | None
    backbone: str | None
    variants: list[str]
    train_photos: list[str]
    test_photos: list[str]
    crop: int
    train_crops: int
    test_crops: int
    val_crop: int
    val_crops: int
    paired_length: list[float]
    synth: list[str]
    set: list[str]
    eval_set: list[str]
    threads: int
    jobs: int
    motion_pretrain: bool
    motion_ckpt: str | None
    ceiling: bool
    motion_iterations: int | None
    motion_set: list[str]
    minutes_per_method: float | None
    report_name: str
    budget_minutes: float
    data_only: bool
    argv: list[str] = field(default_factory=list)  # the command line, for the report


def _default_weights() -> str:
    return os.environ.get("NEURMAP_DMPHN_WEIGHTS", "")


def _csv_list(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list of skimage.data image names")
    return items


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (every number of the protocol that is not in conf/experiment/mini_*.yaml)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights",
        default=_default_weights(),
        help="released GoPro-trained DMPHN(1-2-4) folder (encoder_lv*.pkl, ...); default: env NEURMAP_DMPHN_WEIGHTS. "
        "None: a from-scratch baseline is trained first (experiment=mini_scratch)",
    )
    parser.add_argument("--out", default="reports", help="folder of the report")
    parser.add_argument("--work", default="logs/reproduce_mini", help="data, runs and evaluations go here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of every training")
    parser.add_argument(
        "--iterations", type=_positive, default=None, help="fine-tune iterations (default: mini_neurmap.yaml)"
    )
    parser.add_argument(
        "--scratch-iterations", type=_positive, default=None, help="fallback baseline (default: mini_scratch.yaml)"
    )
    parser.add_argument("--backbone", default=None, help="backbone option (default: the experiment's dmphn_1_2_4)")
    parser.add_argument(
        "--variants",
        type=_csv_list,
        default=["neurmap", "net1", "net2", "net3", "oracle_motion"],
        help="fine-tunes besides the supervised one (comma-separated; neurmap is required; oracle_motion is the "
        "ablation whose R gets the true motion)",
    )
    parser.add_argument("--train-photos", type=_csv_list, default=list(DEFAULT_TRAIN_PHOTOS), help="skimage.data names")
    parser.add_argument("--test-photos", type=_csv_list, default=list(DEFAULT_TEST_PHOTOS), help="held out")
    parser.add_argument("--crop", type=_positive, default=288, help="side of the photo crops the sets are made of")
    parser.add_argument("--train-crops", type=_positive, default=4, help="paired and unpaired crops per photo")
    parser.add_argument("--test-crops", type=_positive, default=4, help="test crops per held-out photograph")
    parser.add_argument("--val-crop", type=_positive, default=160, help="side of the validation crops")
    parser.add_argument("--val-crops", type=_positive, default=1, help="validation crops per training photograph")
    parser.add_argument(
        "--paired-length",
        type=float,
        nargs=2,
        default=[3.0, 19.0],
        metavar=("LOW", "HIGH"),
        help="length range (px) of the paired set's uniform linear blur",
    )
    parser.add_argument(
        "--synth",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="neurmap.synthesize setting of the camera-motion sets (repeatable; default: preset=mild)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of every training (repeatable, shown in the report's commands)",
    )
    parser.add_argument(
        "--eval-set", action="append", default=[], metavar="KEY=VALUE", help="extra neurmap.evaluate override"
    )
    parser.add_argument(
        "--threads",
        type=_positive,
        default=1,
        help="torch threads per job; 1 is the robust choice on a shared 2-core CPU (with 2, every op waits at a "
        "thread barrier whenever another process holds a core: 10-40x slower steps were measured)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive,
        default=min(2, os.cpu_count() or 1),
        help="jobs of a sweep run side by side in this many processes (Hydra's joblib launcher; 1: Hydra's "
        "sequential launcher)",
    )
    parser.add_argument(
        "--motion-pretrain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pretrain M on the paired set first (experiment=mini_motion); NeurMAP, Net2, Net3 start from it",
    )
    parser.add_argument(
        "--motion-ckpt",
        default=None,
        help="an M pretrained before (make reproduce-mini-motion: experiment=mini_motion); default: pretrain here",
    )
    parser.add_argument(
        "--ceiling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune on the target family's own pairs: the ceiling no unpaired method can pass",
    )
    parser.add_argument(
        "--motion-iterations", type=_positive, default=None, help="motion pretraining (default: mini_motion.yaml)"
    )
    parser.add_argument(
        "--motion-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override of the motion pretraining (repeatable)",
    )
    parser.add_argument(
        "--minutes-per-method",
        type=float,
        default=None,
        help="instead of --iterations/--motion-iterations: time a few NeurMAP and motion-pretraining iterations "
        "first and give every method as many iterations as fit in this many minutes (all fine-tunes get the "
        "NeurMAP count, so D iterations stay equal)",
    )
    parser.add_argument(
        "--report-name", default="mini_reproduction", help="<out>/<name>.md and <name>.png (e.g. gpu_reproduction)"
    )
    parser.add_argument(
        "--budget-minutes", type=float, default=30.0, help="the report says whether the whole run fit in this"
    )
    parser.add_argument("--data-only", action="store_true", help="build (or check) the data and stop")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> MiniOptions:
    """Parse and check the options (errors are :class:`ReproError`); ``argv`` is kept for the report."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parsed = vars(build_parser().parse_args(argv))
    opts = MiniOptions(**{**parsed, "synth": parsed["synth"] or list(DEFAULT_SYNTH)}, argv=argv)
    if "neurmap" not in opts.variants:
        raise ReproError(f"--variants must include neurmap, got {','.join(opts.variants)}")
    unknown = [v for v in opts.variants if v not in METHODS or v in ("baseline", "ceiling")]
    if unknown:
        raise ReproError(f"--variants: unknown {unknown}; choose from neurmap, net1, net2, net3, oracle_motion")
    low, high = opts.paired_length
    if not 0 <= low <= high:
        raise ReproError(f"--paired-length must be LOW HIGH with 0 <= LOW <= HIGH, got {low} {high}")
    if opts.minutes_per_method is not None and not opts.minutes_per_method > 0:
        raise ReproError(f"--minutes-per-method must be > 0, got {opts.minutes_per_method}")
    if not opts.report_name or "/" in opts.report_name:
        raise ReproError(f"--report-name must be a file name without a folder, got {opts.report_name!r}")
    for item in [*opts.set, *opts.eval_set]:
        if "=" not in item:
            raise ReproError(f"{item!r} is not KEY=VALUE")
    return opts
