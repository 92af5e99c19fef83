"""Export the deblurring network for deployment: ONNX or TorchScript, dynamic height and width.

``python -m neurmap.export ckpt=PATH format=onnx|torchscript [output=FILE] [backbone=NAME] [check=true]``
(also ``neurmap-export``; settings in ``conf/export.yaml``).

The exported graph takes ``blurry`` (N, 3, H, W) float32 in [0, 1], any H and W, and returns ``deblurred``
of the same shape (not clamped, as in training); padding to the backbone's multiple and cropping back are
part of the graph. ``check=true`` (default) runs the exported file on two image sizes, one of them not a
multiple of the padding, and compares it with PyTorch (onnxruntime for ONNX); a difference above ``tolerance``
is an error (exit status 1), so a file that was written is known to work. Details: :mod:`neurmap.tasks.exporting`.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from neurmap.cli import UsageError, fail, plain_command, stop_message, stoppable
from neurmap.tasks.exporting import export_checkpoint

__all__ = ["main"]

_PROG = "neurmap.export"


def _run(cfg: DictConfig) -> int:
    """Export and check ``cfg.ckpt``'s D; returns the exit status."""
    try:
        with stoppable():
            result = export_checkpoint(cfg)
    except (UsageError, FileNotFoundError, ValueError, ImportError) as err:
        return fail(_PROG, str(err))
    except KeyboardInterrupt as err:
        return fail(_PROG, stop_message(err, "run it again (with overwrite=true if the output was already written)"), 1)
    except RuntimeError as err:
        return fail(_PROG, str(err), status=1)
    checked = "" if result["error"] is None else f", max |exported - PyTorch| = {result['error']:.1e}"
    print(f"{_PROG}: wrote {result['output']} ({result['format']}, {result['backbone']}{checked})")
    return 0


#: Command line; returns the exit status (0 written and checked, 1 check failed, 2 bad arguments).
main = plain_command(
    _PROG,
    "export",
    __doc__,
    "python -m neurmap.export [-h] ckpt=PATH format=onnx|torchscript [key=value ...]",
    _run,
    required=("ckpt",),
    paths=("ckpt",),
)


if __name__ == "__main__":
    sys.exit(main())
