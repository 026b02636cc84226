"""CIFAR-10 from the official python release, read from local files only, and its augmentation.

The loader reads the layout of ``cifar-10-python.tar.gz`` (Krizhevsky, 2009): a folder
``cifar-10-batches-py/`` with ``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and
``batches.meta``, each a pickle. It accepts that folder, a folder containing it, the archive
itself, or a folder containing the archive (read with :mod:`tarfile`, never extracted to disk).
Nothing is ever downloaded.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

__all__ = [
    "ARCHIVE_NAME",
    "BATCH_DIR",
    "CIFAR_URL",
    "Cifar10Data",
    "augment",
    "crop_and_flip",
    "load_cifar10",
    "sample_augment_params",
]

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
BATCH_DIR = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
N_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
ROW_LENGTH = 3 * 32 * 32

# The only globals a CIFAR pickle needs (numpy arrays written by numpy 1.x or 2.x, any protocol).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _mod in ("numpy.core", "numpy._core"):
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    _ALLOWED_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _np_multiarray.scalar
    _ALLOWED_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _np_numeric._frombuffer


class Cifar10Data(NamedTuple):
    """CIFAR-10 arrays; unpacks as ``x_train, y_train, x_test, y_test, label_names``."""

    x_train: np.ndarray  # uint8 (N, 3, 32, 32)
    y_train: np.ndarray  # int64 (N,)
    x_test: np.ndarray  # uint8 (M, 3, 32, 32)
    y_test: np.ndarray  # int64 (M,)
    label_names: list[str]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals a CIFAR batch contains."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected global {module}.{name}") from None


def _missing(got: str, problem: str) -> FileNotFoundError:
    files = f"{TRAIN_FILES[0]}..{TRAIN_FILES[-1]}, {TEST_FILE}, {META_FILE}"
    return FileNotFoundError(
        f"data_dir: expected the CIFAR-10 python release (a '{BATCH_DIR}' folder with {files}, "
        f"or '{ARCHIVE_NAME}', or a folder holding either), got {got}: {problem}. Get "
        f"'{ARCHIVE_NAME}' from {CIFAR_URL} and point data_dir (or the GROWENV_DATA "
        "environment variable) at it; nothing is downloaded automatically."
    )


def _resolve_source(data_dir: str | os.PathLike | None) -> Path:
    """Return the batch folder or the archive file that ``data_dir`` designates."""
    if data_dir is None:
        env = os.environ.get("GROWENV_DATA")
        if not env:
            raise _missing("data_dir=None", "not found (GROWENV_DATA is unset)")
        data_dir = env
    path = Path(data_dir).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise _missing(f"'{path}'", "not found (no such file or directory)")
    if (path / BATCH_DIR).is_dir():
        return path / BATCH_DIR
    if any((path / name).exists() for name in (*TRAIN_FILES, TEST_FILE, META_FILE)):
        return path
    if (path / ARCHIVE_NAME).is_file():
        return path / ARCHIVE_NAME
    raise _missing(f"'{path}'", "not found (the folder holds none of them)")


def _read_raw_files(source: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """Read the named batch files, from a folder or (in one pass) from a tar archive."""
    if source.is_dir():
        raw = {}
        for name in names:
            if not (source / name).is_file():
                raise _missing(f"'{source}'", f"'{name}' not found")
            raw[name] = (source / name).read_bytes()
        return raw
    try:
        archive = tarfile.open(source, mode="r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"CIFAR-10: '{source}' is not a readable tar archive ({exc})") from exc
    raw = {}
    with archive:
        try:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in raw:
                    raw[base] = archive.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ValueError(
                f"CIFAR-10: archive '{source}' is corrupt or truncated ({exc})"
            ) from exc
    for name in names:
        if name not in raw:
            raise _missing(f"archive '{source}'", f"'{BATCH_DIR}/{name}' not found")
    return raw


def _unpickle(raw: bytes, name: str) -> dict:
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # truncated or corrupt pickles raise many exception types
        raise ValueError(
            f"CIFAR-10: '{name}' is not a valid pickle ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(obj, dict):
        raise ValueError(f"CIFAR-10: '{name}' should hold a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _parse_batch(raw: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch file into uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    batch = _unpickle(raw, name)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"CIFAR-10: '{name}' lacks the key '{key}' (has {sorted(batch)})")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != ROW_LENGTH:
        shape = getattr(data, "shape", type(data).__name__)
        raise ValueError(f"CIFAR-10: '{name}' data should be N x {ROW_LENGTH}, got {shape}")
    if data.dtype != np.uint8:
        integer = np.issubdtype(data.dtype, np.integer)
        if not integer or (data.size and (data.min() < 0 or data.max() > 255)):
            raise ValueError(f"CIFAR-10: '{name}' data should be uint8, got {data.dtype}")
        data = data.astype(np.uint8)
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"CIFAR-10: '{name}' labels are not integers ({exc})") from exc
    if labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(
            f"CIFAR-10: '{name}' has {len(data)} images but labels of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(
            f"CIFAR-10: '{name}' labels outside 0..{N_CLASSES - 1} "
            f"(min {labels.min()}, max {labels.max()})"
        )
    # Each row holds the 1024 red, then green, then blue values of a row-major 32x32 image.
    return data.reshape(len(data), *IMAGE_SHAPE), labels


def _parse_meta(raw: bytes) -> list[str]:
    meta = _unpickle(raw, META_FILE)
    names = meta.get("label_names")
    if not isinstance(names, list | tuple) or len(names) != N_CLASSES:
        raise ValueError(f"CIFAR-10: '{META_FILE}' should list {N_CLASSES} 'label_names'")
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10(data_dir: str | os.PathLike | None = None) -> Cifar10Data:
    """Load CIFAR-10 from the official python release on local disk.

    Parameters
    ----------
    data_dir
        The ``cifar-10-batches-py`` folder, a folder containing it, the ``cifar-10-python.tar.gz``
        archive, or a folder containing the archive. ``None`` reads the ``GROWENV_DATA``
        environment variable.

    Returns
    -------
    Cifar10Data
        ``(x_train, y_train, x_test, y_test, label_names)``: uint8 images ``(N, 3, 32, 32)`` in
        batch order (``data_batch_1`` .. ``5``), int64 labels, and the 10 class names.

    Notes
    -----
    Pickles are read with an unpickler that resolves only numpy's array-building globals, so
    a hostile file fails with ``ValueError`` instead of running code.

    Raises
    ------
    FileNotFoundError
        If the data or one of its files is missing (the message names it and the download page).
    ValueError
        If a file is malformed (corrupt pickle, missing key, wrong row length, bad labels).
    """
    source = _resolve_source(data_dir)
    raw = _read_raw_files(source, (*TRAIN_FILES, TEST_FILE, META_FILE))
    train = [_parse_batch(raw[name], name) for name in TRAIN_FILES]
    x_test, y_test = _parse_batch(raw[TEST_FILE], TEST_FILE)
    return Cifar10Data(
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        label_names=_parse_meta(raw[META_FILE]),
    )


def sample_augment_params(
    n: int, generator: torch.Generator, padding: int = 4, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-image crop offsets and flip flags.

    Returns
    -------
    dy, dx, flip
        int64 offsets in ``0..2*padding`` (top-left corner of the window in the padded image)
        and bool flip flags, each of shape ``(n,)``. They are drawn on the generator's device,
        so results do not depend on ``device``, then moved there.
    """
    gen_device = generator.device
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=gen_device)
    flip = torch.rand(n, generator=generator, device=gen_device) < 0.5
    return dy.to(device), dx.to(device), flip.to(device)


def crop_and_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """Zero-pad images ``(n, C, H, W)`` by ``padding``, cut windows at ``(dy, dx)``, mirror flips.

    Vectorised over the batch; ``out[i] = pad(x[i])[:, dy[i]:dy[i]+H, dx[i]:dx[i]+W]``, then
    flipped left-right where ``flip[i]``.
    """
    n, c, h, w = x.shape
    dev = x.device
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = dy.to(dev)[:, None] + torch.arange(h, device=dev)  # (n, h)
    cols = dx.to(dev)[:, None] + torch.arange(w, device=dev)  # (n, w)
    cols = torch.where(flip.to(dev)[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(n, device=dev)[:, None, None, None],
        torch.arange(c, device=dev)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


def augment(
    x: torch.Tensor,
    generator: torch.Generator,
    padding: int = 4,
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip (standard CIFAR augmentation).

    Parameters
    ----------
    x
        Images ``(n, C, H, W)``, or flattened ``(n, C*H*W)`` (reshaped with ``image_shape``).
        Padding is zeros in the units of ``x``: the mean colour for normalised images.
    generator
        Source of randomness; the same generator state gives the same output on any device.
    padding
        Zero padding on each side; crop offsets are uniform in ``-padding..padding``.

    Returns
    -------
    torch.Tensor
        Augmented images, same shape, dtype and device as ``x``.
    """
    if x.ndim == 2:
        flat = x.reshape(len(x), *image_shape)
        return augment(flat, generator, padding=padding).reshape(x.shape)
    if x.ndim != 4:
        raise ValueError(f"augment expects (n, C, H, W) or (n, C*H*W) images, got {tuple(x.shape)}")
    dy, dx, flip = sample_augment_params(len(x), generator, padding=padding, device=x.device)
    return crop_and_flip(x, dy, dx, flip, padding=padding)
