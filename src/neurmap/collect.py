"""Collect the runs of a Hydra multirun into one table: ``python -m neurmap.collect sweep=DIR [key=value ...]``.

Also ``neurmap-collect``. Settings (``conf/collect.yaml``): ``sweep=DIR`` the multirun folder, or ``latest=true``
the newest sweep under ``root``; ``prefix=val/`` the validation metrics instead of the test ones.

Every job directory of a sweep (``logs/train/multiruns/<time>/<num>_<variant>-<backbone>/``) holds its
overrides in ``.hydra/overrides.yaml`` and, once finished, its final metrics in ``final_metrics.json``
(written by ``neurmap.train``). The table has one row per job: the job, its status (``done`` or
``unfinished``), the overrides that differ between jobs, then the final metrics (``test/`` by default, or
``prefix=val/``). It is printed as Markdown and written to ``<sweep>/sweep_summary.{md,csv}``.

Evaluation sweeps (``python -m neurmap.evaluate -m ckpt=a.ckpt,b.ckpt ...``, job folders ``<num>/``) are
collected the same way: their ``final_metrics.json`` holds ``test/<set>/<metric>`` means.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from neurmap.cli import UsageError, fail, plain_command, stop_message, stoppable
from neurmap.config import FINAL_METRICS
from neurmap.utils.files import atomic_write
from neurmap.utils.records import check_writable
from neurmap.utils.tables import to_markdown, write_csv

__all__ = ["collect", "latest_sweep", "main", "to_markdown"]

_PROG = "neurmap.collect"


def latest_sweep(root: Path) -> Path:
    """The most recent sweep folder under ``root`` (``logs/train/multiruns``)."""
    sweeps = sorted(p for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not sweeps:
        raise FileNotFoundError(f"{root} holds no sweep; run `python -m neurmap.train -m ...` first")
    return sweeps[-1]


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return dict(str(item).split("=", 1) for item in items if "=" in str(item))


def _job_number(job: Path) -> tuple[int, str]:
    """Sort key: Hydra's job number (the name's leading digits), then the name."""
    digits = job.name.split("_", 1)[0]
    return (int(digits) if digits.isdigit() else sys.maxsize, job.name)


def collect(sweep: Path, prefix: str = "test/") -> list[dict[str, Any]]:
    """One row per job of ``sweep``: ``job``, ``status``, the overrides that vary, and the final metrics.

    Raises:
        FileNotFoundError: ``sweep`` is not a folder or holds no Hydra job.
    """
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep} is not a folder; expected a multirun folder (logs/train/multiruns/<time>)")
    jobs = sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=_job_number)
    if not jobs:
        raise FileNotFoundError(f"{sweep} holds no Hydra job folder (<num>_<variant>-<backbone>/.hydra)")
    overrides = {job: _overrides(job) for job in jobs}
    keys = sorted({k for o in overrides.values() for k in o})
    varying = [k for k in keys if len({o.get(k) for o in overrides.values()}) > 1]
    rows = []
    for job in jobs:
        row: dict[str, Any] = {"job": job.name}
        final = job / FINAL_METRICS
        content = json.loads(final.read_text()) if final.is_file() else None
        row["status"] = "done" if content else "unfinished"
        row |= {k: overrides[job].get(k, "") for k in varying}
        if content:
            if "iterations" in content:  # a training's record (an evaluation's has none)
                row["iterations"] = content["iterations"]
            row |= {k: v for k, v in sorted(content["metrics"].items()) if k.startswith(prefix)}
        rows.append(row)
    return rows


def _metric_keys(sweep: Path) -> set[str]:
    """Every metric name in the finished jobs' records of ``sweep``."""
    keys: set[str] = set()
    for final in sweep.glob(f"*/{FINAL_METRICS}"):
        keys |= set(json.loads(final.read_text()).get("metrics", {}))
    return keys


def write(rows: Sequence[dict[str, Any]], out: Path) -> None:
    """``out/sweep_summary.md`` and ``out/sweep_summary.csv``."""
    atomic_write(out / "sweep_summary.md", to_markdown(rows))
    write_csv(out / "sweep_summary.csv", rows)


def _run(cfg: DictConfig) -> int:
    """Tabulate ``cfg.sweep`` (or the newest sweep under ``cfg.root``); returns the exit status."""
    try:
        if cfg.sweep is None and not cfg.latest:
            raise UsageError("give sweep=DIR, or latest=true for the newest sweep under root")
        sweep = Path(cfg.sweep).expanduser() if cfg.sweep is not None else latest_sweep(Path(cfg.root).expanduser())
        with stoppable():
            rows = collect(sweep, cfg.prefix)
        check_writable(sweep, "sweep")
    except (UsageError, FileNotFoundError) as err:
        return fail(_PROG, err)
    except KeyboardInterrupt as err:
        return fail(_PROG, stop_message(err, "nothing was written; run it again"), 1)
    seen = sorted({k.split("/", 1)[0] + "/" for k in _metric_keys(sweep) if "/" in k})
    if seen and not any(str(k).startswith(cfg.prefix) for row in rows for k in row):
        print(
            f"{_PROG}: warning: no metric starts with prefix={cfg.prefix}; the jobs have {', '.join(seen)}",
            file=sys.stderr,
        )
    write(rows, sweep)
    print(f"{sweep} ({len(rows)} runs)\n\n{to_markdown(rows)}\nwritten: {sweep / 'sweep_summary.md'}, .csv")
    return 0


#: Command line; returns the exit status (2 for a bad setting or a missing or empty sweep folder).
main = plain_command(
    _PROG,
    "collect",
    __doc__,
    "python -m neurmap.collect [-h] sweep=DIR | latest=true [prefix=val/] [root=DIR]",
    _run,
    paths=("sweep",),
)


if __name__ == "__main__":
    sys.exit(main())
