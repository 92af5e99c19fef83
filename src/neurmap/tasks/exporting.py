"""Export of the deblurring network: :func:`export_checkpoint` runs what ``python -m neurmap.export`` does.

:class:`Exportable` wraps D so that padding to the backbone's multiple and cropping back are part of the
graph (always ``(-H) mod m``, zero when aligned), keeping only the final output of multi-scale backbones.
:func:`export` writes it atomically, with dynamic H and W: ONNX through ``torch.onnx.export(dynamo=True)``
with symbolic H and W, TorchScript through ``torch.jit.trace`` of the same module. :func:`check_export` runs
the written file (onnxruntime for ONNX) on the ``check_sizes`` and returns its largest difference from
PyTorch; :func:`export_checkpoint` raises a RuntimeError when it is above ``tolerance``, so a file that was
written and checked is known to work. Settings: ``conf/export.yaml``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from neurmap.errors import UsageError
from neurmap.nets.backbones import DeblurNet
from neurmap.releases import weights_path
from neurmap.tasks.inference import load_networks
from neurmap.utils.files import commit_temporary

__all__ = ["FORMATS", "Exportable", "check_export", "default_output", "export", "export_checkpoint"]

#: The export formats and their file suffixes.
FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


class Exportable(nn.Module):
    """D with shape-generic padding: always pads by ``(-H) mod m`` (zero when aligned), runs the backbone,
    keeps the final output and crops it back. Equal to :class:`DeblurNet` for images of at least ``m`` px."""

    def __init__(self, deblur: DeblurNet) -> None:
        super().__init__()
        self.net = deblur.net
        self.multiple = int(deblur.pad_multiple)
        self.mode = "replicate" if deblur.pad_mode == "reflect" and self.multiple == 1 else deblur.pad_mode

    def forward(self, blurry: torch.Tensor) -> torch.Tensor:
        h, w = blurry.shape[-2], blurry.shape[-1]
        padded = F.pad(blurry, (0, (-w) % self.multiple, 0, (-h) % self.multiple), mode=self.mode)
        out = self.net(padded)
        if isinstance(out, (list, tuple)):
            out = out[-1]
        return out[..., :h, :w]


def _example(height: int, width: int) -> torch.Tensor:
    return torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))


def export(module: nn.Module, fmt: str, path: Path, example_size: Sequence[int]) -> Path:
    """Write ``module`` as ``fmt`` (onnx | torchscript) to ``path`` atomically; H and W stay dynamic."""
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    module = module.eval()
    example = _example(*example_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with torch.no_grad():
            if fmt == "onnx":
                dims = {2: torch.export.Dim("height", min=2, max=16384), 3: torch.export.Dim("width", min=2, max=16384)}
                program = torch.onnx.export(
                    module,
                    (example,),
                    dynamo=True,
                    input_names=["blurry"],
                    output_names=["deblurred"],
                    dynamic_shapes=(dims,),
                    external_data=False,
                    verbose=False,
                )
                program.save(tmp)
            else:
                traced = torch.jit.trace(module, (example,), check_trace=False)
                torch.jit.save(traced, tmp)
        commit_temporary(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def _run_exported(fmt: str, path: Path, image: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"blurry": image.numpy()})[0])
    return torch.jit.load(str(path), map_location="cpu")(image)


def check_export(reference: nn.Module, fmt: str, path: Path, sizes: Sequence[Sequence[int]]) -> float:
    """Largest |exported - PyTorch| over images of ``sizes`` (CPU)."""
    worst = 0.0
    for height, width in sizes:
        image = _example(height, width)
        with torch.no_grad():
            expected = reference(image)
        got = _run_exported(fmt, path, image)
        if got.shape != expected.shape:
            raise RuntimeError(f"{path}: output {tuple(got.shape)} for input {tuple(image.shape)}, expected same")
        worst = max(worst, float((got - expected).abs().max()))
    return worst


def _check_output(output: Path, ckpt: Path, overwrite: bool) -> None:
    """The output is a file name that is not the checkpoint (nor inside a release folder), in a folder that can
    be written, and new unless ``overwrite``."""
    out, source = output.expanduser().resolve(), ckpt.expanduser().resolve()
    if out == source or source in out.parents:
        raise UsageError(f"output={output} is the checkpoint being exported; choose another output file")
    if out.is_dir():
        raise UsageError(f"output={output} is a folder; give a file name, e.g. output={output / ('model' + '.onnx')}")
    if out.exists() and not overwrite:
        raise UsageError(f"output={output} exists; pass overwrite=true to replace it, or choose another output")
    folder = next((p for p in (out.parent, *out.parent.parents) if p.exists()), out.parent)
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output={output}: cannot write in {folder} (permission denied); choose another output")


def default_output(cfg: DictConfig) -> Path:
    """Where an export goes without ``output=``: ``<run>/export/<stem>_deblur.<fmt>`` for a training run's
    ``<run>/checkpoints/<stem>.ckpt``, else ``<log_dir>/export/<name>_deblur.<fmt>`` (never beside release
    weights)."""
    ckpt = Path(cfg.ckpt).expanduser().resolve()
    name = f"{ckpt.name if ckpt.is_dir() else ckpt.stem}_deblur{FORMATS[str(cfg.format)]}"
    if ckpt.is_file() and ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent / "export" / name
    return Path(str(cfg.paths.log_dir)) / "export" / name


def export_checkpoint(cfg: DictConfig) -> dict[str, object]:
    """Export with settings ``cfg`` (conf/export.yaml); returns the path and the checked error."""
    fmt = str(cfg.format)
    cfg.ckpt = weights_path(cfg.ckpt)  # ckpt=release:<name>: $NEURMAP_RELEASES/weights/<name>
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
    ckpt = Path(cfg.ckpt)
    output = Path(cfg.output) if cfg.output else default_output(cfg)
    _check_output(output, ckpt, bool(cfg.overwrite))
    nets = load_networks(cfg.ckpt, OmegaConf.select(cfg, "model.deblur"), motion=False)  # backbone=<name>, or None
    module = Exportable(nets.deblur).eval()
    export(module, fmt, output, cfg.example_size)
    error = None
    if cfg.check:
        error = check_export(nets.deblur, fmt, output, cfg.check_sizes)
        if error > cfg.tolerance:
            raise RuntimeError(f"{output}: exported model differs from PyTorch by {error:.2e} > {cfg.tolerance}")
    return {"output": output, "error": error, "backbone": nets.backbone, "format": fmt}
