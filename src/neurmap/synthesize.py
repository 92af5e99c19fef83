"""Synthesise blurry/sharp training pairs from sharp images (mode=kernel) or video frames (mode=gopro).

``python -m neurmap.synthesize src=DIR dst=DIR [key=value ...]`` (also ``neurmap-synthesize``); every argument
is ``key=value`` (settings: ``conf/synthesize.yaml``).

mode=kernel (default): NeurMAP's "kernel-synthesized" set, Gong et al. CVPR'17. For every image under
  src (any format; sub-folders too with recursive=true) and k = 0 .. kernel.blurs_per_image - 1, draw a
  camera-motion flow (x/y translation with acceleration, in-plane rotation, zoom), round it to integer
  px, blur every pixel along its own anti-aliased line segment, crop the borders, and write
      dst/<name>_<kkk>_mfmap.mat      mfmap: H x W x 2 = (u horizontal >= 0, v vertical down), px
      dst/<name>_<kkk>_gtimg.png      the sharp image (cropped alike)
      dst/<name>_<kkk>_blurryimg.png  the blurry image
  <name> = the path relative to src without suffix, '/' -> '_'; <kkk> = k on 3 digits.
mode=gopro: src holds video frames, directly (one sequence named after src) or one sub-folder per
  sequence. Each window of gopro.frames consecutive frames (step gopro.stride) gives
      dst/<sequence>/blur/<stem>.png   mean of the window (in linear light with gopro.gamma)
      dst/<sequence>/sharp/<stem>.png  its middle frame, whose name (without suffix) is <stem>

Runs are reproducible and resumable (done items are skipped); dst/synthesize_settings.json records the settings,
and a dst made with other settings, or holding a file this command did not write, is refused unless
overwrite=true. workers=N runs N processes. Exit status: 0 done (also with skipped failures under on_error=skip),
1 a source failed (on_error=raise stops at it, on_error=fail goes on) or the run was stopped (Ctrl+C, SIGTERM;
run it again to resume), 2 bad arguments.
The method in detail: neurmap.synth.synthesis. Examples:
  python -m neurmap.synthesize src=data/BSD500/train dst=data/Synthetic_blur/Gao kernel.blurs_per_image=50 workers=8
  python -m neurmap.synthesize src=data/frames dst=data/my_gopro mode=gopro gopro.frames=11 gopro.gamma=null
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from neurmap.cli import UsageError, fail, plain_command, stop_message, stoppable
from neurmap.synth.synthesis import SynthesisError, print_summary, synthesize

__all__ = ["main"]

_PROG = "neurmap.synthesize"


def _run(cfg: DictConfig) -> int:
    """Make the pairs of ``cfg.src`` in ``cfg.dst``; returns the exit status."""
    try:
        with stoppable():
            summary = synthesize(Path(cfg.src).expanduser(), Path(cfg.dst).expanduser(), cfg)
    except (UsageError, FileNotFoundError) as err:
        return fail(_PROG, str(err))
    except PermissionError as err:
        return fail(_PROG, f"{err.filename}: {err.strerror}; dst must be a folder you can write to")
    except SynthesisError as err:
        return fail(_PROG, str(err), status=1)
    except KeyboardInterrupt as err:
        return fail(_PROG, stop_message(err, "run the same command again to resume (finished pairs are kept)"), 1)
    print_summary(summary, _PROG)
    if summary["failed_files"] and cfg.on_error == "fail":
        count = len(summary["failed_files"])
        return fail(_PROG, f"{count} source(s) could not be read and were skipped (on_error=skip: exit 0)", 1)
    return 0


#: Command line; returns the exit status (0 done, 1 a source failed or the run was stopped, 2 bad arguments).
main = plain_command(
    _PROG,
    "synthesize",
    __doc__,
    "python -m neurmap.synthesize [-h] src=DIR dst=DIR [key=value ...]",
    _run,
    required=("src", "dst"),
    paths=("src", "dst"),
)


if __name__ == "__main__":
    sys.exit(main())
