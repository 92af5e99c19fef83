"""Synthesise blurry/sharp training pairs from sharp images (mode=kernel) or video frames (mode=gopro).

mode=kernel (default): NeurMAP's "kernel-synthesized" set, Gong et al. CVPR'17. For every image under
  SRC (any format; sub-folders too with recursive=true) and k = 0 .. kernel.blurs_per_image - 1, draw a
  camera-motion flow (x/y translation with acceleration, in-plane rotation, zoom), round it to integer
  px, blur every pixel along its own anti-aliased line segment, crop the borders, and write
      DST/<name>_<kkk>_mfmap.mat      mfmap: H x W x 2 = (u horizontal >= 0, v vertical down), px
      DST/<name>_<kkk>_gtimg.png      the sharp image (cropped alike)
      DST/<name>_<kkk>_blurryimg.png  the blurry image
  <name> = the path relative to SRC without suffix, '/' -> '_'; <kkk> = k on 3 digits.
mode=gopro: SRC holds video frames, directly (one sequence named after SRC) or one sub-folder per
  sequence. Each window of gopro.frames consecutive frames (step gopro.stride) gives
      DST/<sequence>/blur/<stem>.png   mean of the window (in linear light with gopro.gamma)
      DST/<sequence>/sharp/<stem>.png  its middle frame, whose name (without suffix) is <stem>

Runs are reproducible and resumable (done items are skipped); DST/synthesize_settings.json records the settings,
and a DST made with other settings, or holding a file this command did not write, is refused unless
overwrite=true. workers=N runs N processes. Exit status: 0 done (also with skipped failures under on_error=skip),
1 a source failed (on_error=raise stops at it, on_error=fail goes on) or the run was stopped (Ctrl+C, SIGTERM;
run it again to resume), 2 bad arguments.
The method in detail: neurmap.synth.synthesis. Examples:
  python -m neurmap.synthesize data/BSD500/train data/Synthetic_blur/Gao kernel.blurs_per_image=50 workers=8
  python -m neurmap.synthesize data/frames data/my_gopro mode=gopro gopro.frames=11 gopro.gamma=null
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from neurmap.cli import UsageError, fail, parser, stop_message, stoppable
from neurmap.synth.synthesis import SynthesisError, load_config, print_summary, synthesize
from neurmap.utils.quiet import quiet_known_noise

__all__ = ["main"]

_PROG = "neurmap.synthesize"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit status (0 done, 1 a source failed under ``on_error=raise``, 2 bad arguments)."""
    cli = parser(_PROG, "python -m neurmap.synthesize [-h] SRC DST [key=value ...]", __doc__, "synthesize")
    cli.add_argument("src", metavar="SRC", help="folder of sharp images (kernel) or video frames (gopro)")
    cli.add_argument("dst", metavar="DST", help="output folder (created; must not be inside SRC)")
    cli.add_argument("overrides", metavar="key=value", nargs="*", help="settings, see below")
    args = cli.parse_args(argv)
    quiet_known_noise()
    try:
        cfg = load_config(args.overrides)
        with stoppable():
            summary = synthesize(args.src, args.dst, cfg)
    except (UsageError, FileNotFoundError) as err:
        return fail(_PROG, str(err))
    except PermissionError as err:
        return fail(_PROG, f"{err.filename}: {err.strerror}; DST must be a folder you can write to")
    except SynthesisError as err:
        return fail(_PROG, str(err), status=1)
    except KeyboardInterrupt as err:
        return fail(_PROG, stop_message(err, "run the same command again to resume (finished pairs are kept)"), 1)
    print_summary(summary, _PROG)
    if summary["failed_files"] and cfg.on_error == "fail":
        count = len(summary["failed_files"])
        return fail(_PROG, f"{count} source(s) could not be read and were skipped (on_error=skip: exit 0)", 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
