# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Chat demo on the default model: ``python demos/chat.py [--verbose]``.

Multi-turn, with the model's chat template, streaming text, and Ctrl-C safe
(it stops the current answer; Ctrl-D leaves).
"""

import sys

from mlx_specstream.blas import ensure_openblas

if __name__ == "__main__":
    ensure_openblas()
    from mlx_specstream.chat import main

    main(sys.argv[1:])
