"""The mini reproduction, NeurMAP against supervised fine-tuning at CPU scale: ``python -m neurmap.reproduce_mini``
(``make reproduce-mini``; ``--help`` lists the options). The experiment lives in :mod:`neurmap.experiments.mini`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from neurmap.cli import fail
from neurmap.experiments.mini.common import PROG, ReproError, StageFailed

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; errors end with one line: exit status 2 for a bad option or setting, 1 for a failed stage."""
    from hydra.errors import HydraException

    from neurmap.experiments.mini.options import parse_args
    from neurmap.experiments.mini.pipeline import run

    try:
        run(parse_args(argv))
    except (ReproError, FileNotFoundError, HydraException, ValueError) as err:
        return fail(PROG, err)
    except StageFailed as err:
        return fail(PROG, err, status=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
