# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``python -m mlx_specstream.convert``: the same as ``mlx-specstream convert``."""

from .convert import main

main()
