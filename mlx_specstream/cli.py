# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream <command> ...``: dispatch to each command's ``main``."""

import importlib
import sys

from ._version import __version__
from .blas import ensure_openblas

COMMANDS = {
    "generate": (
        "mlx_specstream.generate",
        "generate text (Speculative Streaming or plain)",
    ),
    "chat": ("mlx_specstream.chat", "interactive chat with streaming output"),
    "convert": (
        "mlx_specstream.convert.convert",
        "convert a PyTorch / GGUF checkpoint to an MLX directory",
    ),
    "train": ("mlx_specstream.train.trainer", "train speculative streams (PyTorch)"),
    "data": (
        "mlx_specstream.train.datasets.make",
        "write the seeded synthetic task data sets",
    ),
    "distill": (
        "mlx_specstream.train.distill",
        "make self-distillation targets with the model",
    ),
    "medusa-train": (
        "mlx_specstream.train.medusa",
        "train Medusa-1 heads (PyTorch), the paper's baseline",
    ),
    "bench": (
        "mlx_specstream.benchmarks.bench",
        "benchmark decoding methods side by side",
    ),
    "calibrate": (
        "mlx_specstream.calibrate",
        "measure this device and pick the tree budget",
    ),
    "server": (
        "mlx_specstream.server",
        "OpenAI-compatible HTTP server with a chat page",
    ),
}


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mlx-specstream <command> [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<10} {help_}")
        return
    if argv[0] == "--version":
        print(__version__)
        return
    if argv[0] not in COMMANDS:
        sys.exit(f"error: unknown command {argv[0]!r} (see mlx-specstream --help)")
    if argv[0] not in ("convert", "train", "medusa-train", "data"):
        ensure_openblas()  # fp32 decoding on Linux is 30x slower without it
    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.main(argv[1:])


# Console scripts in mlx-lm's idiom: ``mlx_specstream.generate`` == ``mlx-specstream generate``.
def generate() -> None:
    main(["generate", *sys.argv[1:]])


def chat() -> None:
    main(["chat", *sys.argv[1:]])


def convert() -> None:
    main(["convert", *sys.argv[1:]])


def calibrate() -> None:
    main(["calibrate", *sys.argv[1:]])


def server() -> None:
    main(["server", *sys.argv[1:]])
