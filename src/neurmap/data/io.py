"""Reading and writing images and motion maps, with one-line errors that name the file.

* :func:`read_image`: any format OpenCV decodes (PNG, JPEG, TIFF, BMP, WebP, ...) to float32 RGB (3, H, W)
  in [0, 1]. Grayscale is replicated to three channels, an alpha channel is dropped, 16-bit images are
  scaled by 1/65535 and float images are clipped to [0, 1]. JPEG EXIF orientation is applied (phone
  photos come out upright).
* :func:`write_image`: 8-bit (or 16-bit) PNG/JPEG, written atomically (a temporary file renamed into
  place), so an interrupted writer never leaves a truncated image that a resumed run would skip.
* :func:`read_mfmap` / :func:`write_mfmap`: Gong et al.'s ``*_mfmap.mat`` (variable ``mfmap``, H x W x 2 =
  (u, v): u horizontal >= 0, v vertical, down positive, full blur length in px) converted to and from
  neurmap's motion layout (2, H, W) = (vertical, horizontal), the layout of :mod:`neurmap.nets.reblur`.
* :func:`list_images` / :func:`require_dir`: folder scanning that names the path and the expected layout
  when a folder is missing or empty.

Files are read through ``np.fromfile`` + ``cv2.imdecode`` so that any path (non-ASCII included) works.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import torch

from neurmap.utils.files import atomic_write

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "data_roots",
    "missing_roots",
    "list_images",
    "read_image",
    "read_mfmap",
    "require_dir",
    "write_image",
    "write_mfmap",
]

#: File suffixes treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageReadError(ValueError):
    """An image file that cannot be read or decoded; the message names the file."""


def _decode(path: Path) -> np.ndarray:
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot read the file ({err.strerror or err})") from err
    if raw.size == 0:
        raise ImageReadError(f"{path}: the file is empty")
    image = cv2.imdecode(raw, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or an unsupported format)")
    if image.ndim == 3 and image.shape[2] == 4:  # RGBA: drop the alpha channel
        image = image[..., :3]
    return image


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """Read an image file as float32 RGB (3, H, W) in [0, 1].

    Raises:
        ImageReadError: the file is missing, empty, corrupt or not an image; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    image = _decode(path)
    if image.dtype == np.uint8:
        scale = 1.0 / 255.0
    elif image.dtype == np.uint16:
        scale = 1.0 / 65535.0
    elif image.dtype in (np.float32, np.float64):
        scale = 1.0
    else:
        raise ImageReadError(f"{path}: unsupported pixel type {image.dtype} (expected 8/16-bit or float)")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] != 3:
        raise ImageReadError(f"{path}: {image.shape[2]} channels, expected 1 (gray), 3 (RGB) or 4 (RGBA)")
    rgb = image[..., ::-1].astype(np.float32) * np.float32(scale)
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def write_image(path: str | os.PathLike, image: torch.Tensor | np.ndarray, bits: int = 8, quality: int = 95) -> None:
    """Write a float RGB image in [0, 1] ((3, H, W) tensor or (H, W, 3) array) atomically.

    Values are clipped to [0, 1] and rounded. The format follows the suffix (``.png``, ``.jpg``, ...).

    Args:
        path: destination file; parent folders are created.
        image: RGB image in [0, 1].
        bits: 8 or 16 (16 only for PNG/TIFF).
        quality: JPEG quality (1-100).
    """
    path = Path(path)
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"{path}: expected a (3, H, W) tensor, got {tuple(image.shape)}")
        array = image.detach().float().cpu().numpy().transpose(1, 2, 0)
    else:
        array = np.asarray(image, dtype=np.float32)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"{path}: expected an (H, W, 3) array, got {array.shape}")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    peak = 255.0 if bits == 8 else 65535.0
    pixels = np.rint(np.clip(array, 0.0, 1.0) * peak).astype(np.uint8 if bits == 8 else np.uint16)
    suffix = path.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if suffix in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(pixels[..., ::-1]), params)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {bits}-bit image as {suffix}")
    atomic_write(path, encoded.tobytes())


def read_mfmap(path: str | os.PathLike) -> torch.Tensor:
    """Read a Gong et al. ``*_mfmap.mat`` as neurmap motion: float32 (2, H, W) = (vertical, horizontal) px.

    The file's ``mfmap`` is H x W x 2 = (u, v) with u (horizontal) >= 0 and v vertical, down positive;
    the result is canonical (channel 1 >= 0), as every neurmap motion map.
    """
    from scipy.io import loadmat  # lazy: scipy is only needed for .mat files
    from scipy.io.matlab import MatReadError

    path = Path(path)
    try:
        content = loadmat(path, variable_names=["mfmap"])
    except NotImplementedError as err:  # scipy reads MATLAB v4-v7.2, not the HDF5-based v7.3
        raise ImageReadError(f"{path}: a MATLAB v7.3 file; save it with -v7 (scipy cannot read v7.3)") from err
    except (OSError, ValueError, TypeError, MatReadError) as err:
        raise ImageReadError(f"{path}: not a readable MATLAB .mat file ({err})") from err
    if "mfmap" not in content:
        raise ImageReadError(f"{path}: no variable 'mfmap' (expected Gong et al.'s H x W x 2 motion flow)")
    mfmap = np.asarray(content["mfmap"], dtype=np.float32)
    if mfmap.ndim != 3 or mfmap.shape[2] != 2:
        raise ImageReadError(f"{path}: mfmap has shape {mfmap.shape}, expected H x W x 2 (u, v)")
    motion = np.stack([mfmap[..., 1], mfmap[..., 0]])
    flip = motion[1] < 0  # files written by other tools may not be canonical yet
    motion[:, flip] *= -1
    return torch.from_numpy(np.ascontiguousarray(motion))


def write_mfmap(path: str | os.PathLike, motion: torch.Tensor | np.ndarray) -> None:
    """Write neurmap motion (2, H, W) = (vertical, horizontal) px as Gong's ``mfmap`` (H x W x 2 = (u, v)).

    The map is canonicalised first (u >= 0, Gong's ``uv_half``). Written atomically, compressed, float32.
    """
    import io

    from scipy.io import savemat

    motion = motion.detach().cpu().numpy() if isinstance(motion, torch.Tensor) else np.asarray(motion)
    if motion.ndim != 3 or motion.shape[0] != 2:
        raise ValueError(f"{path}: expected motion of shape (2, H, W), got {motion.shape}")
    motion = motion.astype(np.float32, copy=True)
    flip = motion[1] < 0
    motion[:, flip] *= -1
    mfmap = np.ascontiguousarray(np.stack([motion[1], motion[0]], axis=2))
    buffer = io.BytesIO()
    savemat(buffer, {"mfmap": mfmap}, do_compression=True)
    atomic_write(Path(path), buffer.getvalue())


def require_dir(path: str | os.PathLike, expected: str) -> Path:
    """``path`` as a Path if it is a folder, else a FileNotFoundError naming it and ``expected`` (a layout)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"{path} {what}; expected {expected}")
    return path


def list_images(
    root: str | os.PathLike,
    expected: str,
    recursive: bool = True,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[Path]:
    """Sorted image files under ``root`` (recursively by default; hidden files and folders skipped).

    Raises:
        FileNotFoundError: ``root`` is missing or holds no image; the message names it and ``expected``.
    """
    root = require_dir(root, expected)
    suffixes = {e.lower() for e in extensions}
    pattern = "**/*" if recursive else "*"
    files = sorted(
        p
        for p in root.glob(pattern)
        if p.suffix.lower() in suffixes
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        kinds = "/".join(sorted(s.lstrip(".") for s in suffixes))
        raise FileNotFoundError(f"{root} holds no image ({kinds}); expected {expected}")
    return files


def data_roots(node: object) -> list[str]:
    """The data roots named in a resolved data config (the values of its ``root`` keys), each once, in order."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found += [str(value)] if key == "root" and isinstance(value, str) else data_roots(value)
    elif isinstance(node, list):
        for value in node:
            found += data_roots(value)
    return list(dict.fromkeys(found))


def missing_roots(node: object) -> list[str]:
    """The roots of :func:`data_roots` that do not exist, all of them."""
    return [root for root in data_roots(node) if not Path(root).exists()]
