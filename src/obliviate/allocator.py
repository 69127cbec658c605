"""The C memory allocator of a CPU run: tcmalloc (or jemalloc) where the machine has one.

A training step on the CPU allocates and frees a few hundred tensors of a few megabytes each, in a different order
in backward than in forward. glibc's ``malloc`` hands most of them out of one heap that it can only shrink from the
top: freed activations stay resident as holes that the step's gradients only partly fit, and what it does return
it faults in again the next step. tcmalloc keeps per-size free lists instead. On SmolLM2-135M (ME+GD, float32
AdamW, 2 threads; ``bench/step_speed.py``, docs/benchmarks.md) a step takes about a fifth less time under it and
peaks about 0.2-0.3 GB lower.

The allocator can only be chosen when a process starts (``LD_PRELOAD``), the way PyTorch's CPU launcher
(``python -m torch.backends.xeon.run_cpu --enable-tcmalloc``) does it: so ``obliviate`` run as a program on
Linux, on a machine without a GPU, starts itself again with the first of :data:`LIBRARIES` that the system's
library cache lists, before anything else is imported (the process keeps its id, arguments and environment, so
``torchrun`` sees nothing of it). ``OBLIVIATE_MALLOC=system`` keeps the C library's own; ``OBLIVIATE_MALLOC=<path
or name of a library>`` uses that one. ``obliviate.cli.main`` called from Python, and GPU machines (where host
memory is rarely the limit and the GPU's own allocator does this work), are left as they are.
"""

from __future__ import annotations

import ctypes.util
import os
import platform
import sys
from collections.abc import Mapping

#: the variable that chooses: "system", or a library's path or file name
ENV = "OBLIVIATE_MALLOC"
#: libraries looked for, in this order (names as ``ctypes.util.find_library`` takes them)
LIBRARIES = ("tcmalloc_minimal", "tcmalloc", "jemalloc")
#: device files whose presence means a GPU machine (NVIDIA, AMD ROCm)
GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd")


def find_allocator() -> str | None:
    """File name of the first of :data:`LIBRARIES` the system's library cache lists, else None."""
    for name in LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def preload_environment(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The environment to start this program again with, preloading the allocator; None where it should run as
    it is (not Linux, a GPU machine, ``OBLIVIATE_MALLOC=system``, no library found, or already preloaded)."""
    choice = environ.get(ENV, "").strip()
    if choice.lower() == "system" or platform.system() != "Linux":
        return None
    if not choice and any(os.path.exists(dev) for dev in GPU_DEVICES):
        return None
    library = choice or find_allocator()
    if not library:
        return None
    preloaded = _preloaded(environ)
    if any(os.path.basename(p) == os.path.basename(library) for p in preloaded):
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = ":".join([library, *preloaded])
    env[ENV] = library
    return env


def _preloaded(environ: Mapping[str, str]) -> list[str]:
    """The libraries ``LD_PRELOAD`` names (the dynamic loader takes spaces or colons between them)."""
    return [p for p in environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]


def restart_with_allocator(argv: list[str]) -> None:
    """Replace this process by ``python -m obliviate.cli *argv`` with the allocator preloaded, when
    :func:`preload_environment` says so; else return."""
    env = preload_environment(os.environ)
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "obliviate.cli", *argv], env)


def current_allocator() -> str:
    """What ``run.json`` records: the preloaded allocator library, or "system"."""
    for path in _preloaded(os.environ):
        if any(name in os.path.basename(path) for name in LIBRARIES):
            return os.path.basename(path)
    return "system"
