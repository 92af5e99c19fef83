"""The mini reproduction's judgements, as pure functions of numbers and per-image tables (tested in
``tests/test_reproduce_mini.py``). The report's template only words what these return.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from neurmap.experiments.mini.common import ReproError

__all__ = [
    "PAPER",
    "ablation_reading",
    "ahead_by_two_se",
    "iterations_in",
    "motion_learning",
    "paired_difference",
    "share_of_paper",
    "standing",
    "target_verdicts",
]

#: The paper's DMPHN row on the kernel-synthesized (unseen-blur) test set (before -> after NeurMAP), and the
#: authors' training scale (iterations, crop side, paired+unpaired batch) the report compares against.
PAPER = {
    "psnr_gain": 0.93,
    "lpips_before": 0.236,
    "lpips_after": 0.124,
    "iterations": 210_000,
    "crop": 256,
    "batch": "4+4",
}

PerImage = Sequence[Mapping[str, str]]


def paired_difference(rows_a: PerImage, rows_b: PerImage, key: str) -> tuple[float, float, int]:
    """Mean and standard error of the per-image difference ``a - b`` of metric ``key`` over the images (``name``)
    both have a finite value for, and their count."""
    by_name = {r["name"]: r for r in rows_a}
    diffs = []
    for r in rows_b:
        other = by_name.get(r["name"])
        if other is None or not other.get(key) or not r.get(key):
            continue
        x, y = float(other[key]), float(r[key])
        if not (math.isnan(x) or math.isnan(y)):
            diffs.append(x - y)
    if not diffs:
        return math.nan, math.nan, 0
    sem = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
    return statistics.fmean(diffs), sem, len(diffs)


def ahead_by_two_se(mean: float, se: float, n: int, lower_is_better: bool) -> bool:
    """The target's test: the difference points the good way by more than twice its standard error."""
    ahead = -mean if lower_is_better else mean
    return n > 1 and not math.isnan(se) and ahead > 2 * se


def standing(mean: float, se: float, n: int, lower_is_better: bool) -> str:
    """``ahead`` or ``behind`` when the difference points that way by more than twice its standard error,
    ``level`` when it is within that (noise), ``unknown`` without a standard error."""
    if n < 2 or math.isnan(mean) or math.isnan(se):
        return "unknown"
    if ahead_by_two_se(mean, se, n, lower_is_better):
        return "ahead"
    return "behind" if ahead_by_two_se(-mean, se, n, lower_is_better) else "level"


def target_verdicts(per_image: Mapping[str, PerImage], method: str = "neurmap") -> list[dict[str, Any]]:
    """The target as data: for each reference (``start``, the supervised ``baseline``) and metric (PSNR up,
    LPIPS down), the mean and standard error of the per-image ``method`` - reference differences and whether
    ``method`` is ahead by more than twice the standard error. ``per_image`` maps a run's key to its rows."""
    out = []
    for ref in ("start", "baseline"):
        for key, lower_better in (("psnr", False), ("lpips", True)):
            mean, se, n = paired_difference(per_image.get(method, []), per_image.get(ref, []), key)
            met = ahead_by_two_se(mean, se, n, lower_better)
            out.append({"reference": ref, "metric": key, "mean": mean, "se": se, "n": n, "met": met})
    return out


def iterations_in(minutes: float, seconds_per_iteration: float) -> int:
    """How many iterations of ``seconds_per_iteration`` fit in ``minutes`` (at least 1)."""
    if not seconds_per_iteration > 0:
        raise ReproError(f"a timed iteration took {seconds_per_iteration} s; cannot size the runs")
    return max(1, int(minutes * 60.0 // seconds_per_iteration))


def motion_learning(epe: float, zero_epe: float) -> str | None:
    """What M's end-point error says against a motion map of zero: ``learned`` (below 80 % of the zero map's),
    ``partial`` (below 95 %), ``none``; None when either is unknown."""
    if math.isnan(epe) or math.isnan(zero_epe) or zero_epe <= 0:
        return None
    ratio = epe / zero_epe
    return "learned" if ratio < 0.8 else "partial" if ratio < 0.95 else "none"


def ablation_reading(net1_gap: float, motion_gaps: Sequence[float], margin: float = 0.2) -> str | None:
    """Where the difference to the supervised fine-tune comes from, from PSNR gaps (dB, method - supervised):
    ``loss_with_m`` when Net1 (discriminator only) is within ``margin`` and every variant with M and R is below
    by more than it, ``gain_with_m`` when they are all above by more than it, else None (no clear reading)."""
    if math.isnan(net1_gap) or abs(net1_gap) >= margin or not motion_gaps:
        return None
    if all(g < -margin for g in motion_gaps):
        return "loss_with_m"
    if all(g > margin for g in motion_gaps):
        return "gain_with_m"
    return None


def share_of_paper(gain: float, paper_gain: float) -> float:
    """``gain`` as a percentage of the paper's (same sign = same direction); nan when unknown."""
    return math.nan if math.isnan(gain) or paper_gain == 0 else 100.0 * gain / paper_gain
