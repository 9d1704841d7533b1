"""One complete checkpoint per save, written atomically, and digests of tensors.

nnU-Net's ``save_checkpoint`` builds its checkpoint dict and calls ``torch.save(dict, filename)``.
:func:`complete_checkpoint_writes` adds the plugin's state to that very dict and writes it
to a temporary file that replaces the old checkpoint only when complete (flushed to disk),
so a job killed at any moment leaves either the old checkpoint or the new one, each whole,
and nothing is written twice.

Example:
    >>> import os, tempfile, torch
    >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint_latest.pth")
    >>> with complete_checkpoint_writes({"run": {"frozen": []}}):
    ...     torch.save({"network_weights": {}}, path)
    >>> sorted(torch.load(path, weights_only=False))
    ['network_weights', 'nnunet_transfer']
    >>> tensor_digest({"w": torch.zeros(2)}) == tensor_digest({"w": torch.zeros(2)})
    True
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
from typing import Iterator, Mapping

import torch

#: The key of the plugin's state inside nnU-Net's checkpoint dict.
CHECKPOINT_KEY = "nnunet_transfer"


def write_atomically(obj: object, filename: "str | os.PathLike[str]", save=None) -> None:
    """``torch.save(obj, filename)`` through a flushed temporary file and ``os.replace``."""
    save = save or torch.save
    target = os.fspath(filename)
    for stale in glob.glob(f"{glob.escape(target)}.tmp*"):  # left by a job killed while writing
        os.remove(stale)
    tmp = f"{target}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def complete_checkpoint_writes(extra: Mapping[str, object]) -> Iterator[None]:
    """Within the block, every ``torch.save`` of an nnU-Net checkpoint dict to a path gets
    ``extra`` under :data:`CHECKPOINT_KEY` and is written atomically; other saves are unchanged."""
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "network_weights" in obj and isinstance(f, (str, os.PathLike)):
            return write_atomically({**obj, CHECKPOINT_KEY: dict(extra)}, f,
                                    save=lambda o, fh: original(o, fh, *args, **kwargs))
        return original(obj, f, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (sorted by name): equal iff bitwise equal."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
