"""Deblur your own photos with a trained model.

``python -m neurmap.deblur input=PATH output=PATH ckpt=PATH [key=value ...]`` (also ``neurmap-deblur``)

* ``input``: one image, or a folder (searched recursively; the tree is mirrored under ``output``).
* ``output``: a folder, or, for one input image, a file name with an image suffix.
* Every argument is ``key=value``; a file name needs no quoting beyond the shell's (``input=IMG (1).jpg``
  in shell quotes works).
* ``ckpt``: a neurmap checkpoint (it names its own backbone), or a backbone's release weights with
  ``backbone=<name>`` (e.g. ``backbone=dmphn_1_2_4 ckpt=release:dmphn_1_2_4``, which reads
  ``$NEURMAP_RELEASES/weights/dmphn_1_2_4``; a path works too).

Images of any size run in tiles (``tile=512 overlap=64``), so a 12-megapixel photo fits in a few GB of
memory on a CPU; ``tile=null`` runs whole images. ``motion=true`` also saves M's motion map in flow colours
and ``compare=true`` a side-by-side view. Settings and their defaults: ``conf/deblur.yaml``.
Unreadable images are reported and skipped; existing outputs are skipped unless ``overwrite=true``, so a
stopped run resumes. Outputs of another checkpoint or other settings (``deblur_settings.json`` beside them) are
refused unless ``overwrite=true``; two inputs that would give one output (``x.png`` and ``x.jpg``) are refused.
Exit status: 0 done, 1 some images could not be read (``on_error=skip``: 0) or the run was stopped (Ctrl+C,
SIGTERM), 2 bad arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from neurmap.cli import UsageError, fail, plain_command, stop_message, stoppable
from neurmap.tasks.deblurring import PROG, deblur

__all__ = ["main"]


def _run(cfg: DictConfig) -> int:
    """Deblur ``cfg.input`` into ``cfg.output``; returns the exit status."""
    try:
        with stoppable():
            summary = deblur(Path(cfg.input).expanduser(), Path(cfg.output).expanduser(), cfg)
    except (UsageError, FileNotFoundError, ValueError) as err:
        return fail(PROG, str(err))
    except KeyboardInterrupt as err:
        return fail(PROG, stop_message(err, "run the same command again to resume (finished images are kept)"), 1)
    print(
        f"{PROG}: {summary['written']} deblurred, {summary['existing']} already there, "
        f"{len(summary['failed'])} failed -> {cfg.output} ({summary['backbone']}, {summary['device']}, "
        f"{summary['seconds']:.1f} s)"
    )
    if summary["failed"] and cfg.on_error != "skip":
        count = len(summary["failed"])
        return fail(PROG, f"{count} image(s) could not be read and were skipped (on_error=skip: exit 0)", 1)
    return 0


#: Command line; returns the exit status (0 done, 1 some images failed or the run was stopped, 2 bad arguments).
main = plain_command(
    PROG,
    "deblur",
    __doc__,
    "python -m neurmap.deblur [-h] input=PATH output=PATH ckpt=PATH [key=value ...]",
    _run,
    required=("input", "output", "ckpt"),
    paths=("input", "output"),
)


if __name__ == "__main__":
    sys.exit(main())
