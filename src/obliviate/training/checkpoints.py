"""Which checkpoints are complete: a kill during a save leaves a half-written ``checkpoint-N`` behind.

The engine writes a checkpoint's weights, optimizer, scheduler and RNG state first and ``trainer_state.json``
last. A checkpoint counts as complete when ``trainer_state.json`` parses and names its step, every
safetensors file is whole (its header parses and the file is as long as the header says), every
``.pt``/``.pth`` file (torch's zip format) ends with its zip directory, and the weights are there. Resuming
takes the newest complete checkpoint; newer incomplete ones are reported and removed.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
            "pytorch_model.bin", "pytorch_model.bin.index.json", "adapter_model.bin")


def _safetensors_problem(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"{path.name} is truncated"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{path.name} is unreadable"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    if size < 8 + n + max(ends, default=0):
        return f"{path.name} is truncated"
    return None


def checkpoint_problem(folder: str | Path) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None when it is."""
    folder = Path(folder)
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "trainer_state.json is missing (the save was interrupted)"
    except (OSError, ValueError, UnicodeDecodeError):
        return "trainer_state.json is truncated or unreadable"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return "trainer_state.json names no global_step"
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return problem
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "model.safetensors.index.json is unreadable"
        missing = sorted(s for s in shards if not (folder / s).is_file())
        if missing:
            return f"weight shard {missing[0]} is missing"
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        if not zipfile.is_zipfile(path):
            return f"{path.name} is truncated"
    # DeepSpeed keeps the weights in the folder that `latest` names; everything else at the top level.
    latest = folder / "latest"
    if latest.is_file():
        tag = latest.read_text(encoding="utf-8", errors="replace").strip()
        if not tag or not (folder / tag).is_dir():
            return f"DeepSpeed state folder '{tag}' is missing"
    elif not any((folder / name).is_file() for name in _WEIGHTS):
        return "no weights file"
    return None


def checkpoints(folder: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders in ``folder``, newest (highest N) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete_checkpoint(folder: str | Path, *, remove_incomplete: bool = False) -> Path | None:
    """The newest complete checkpoint in ``folder`` (None if there is none).

    Newer incomplete checkpoints are logged with the reason and, with ``remove_incomplete``, deleted, so the
    engine neither trips over them nor mixes their files into a later save of the same step.
    """
    for path in checkpoints(folder):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        log.warning("%s is incomplete (%s); %s", path, problem,
                    "removed it" if remove_incomplete else "skipping it")
        if remove_incomplete:
            shutil.rmtree(path, ignore_errors=True)
    return None
