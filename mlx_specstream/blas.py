# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Use OpenBLAS on Linux: the mlx[cpu] wheel links a slow reference BLAS.

libmlx resolves ``cblas_sgemm`` at load time, so preloading OpenBLAS makes fp32 matmuls
about 30x faster. The preload must be in the environment when the process starts,
hence a re-exec of the command line at start-up (CLI and benchmarks only).
"""

import os
import sys
from typing import List, Optional

OPENBLAS_PATHS = [
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
]
NO_REEXEC = "MLX_SPECSTREAM_NO_REEXEC"


def find_openblas() -> Optional[str]:
    return next((p for p in OPENBLAS_PATHS if os.path.exists(p)), None)


def _loaded_libraries() -> List[str]:
    try:
        with open("/proc/self/maps") as f:
            return [line.split()[-1] for line in f if ".so" in line]
    except OSError:
        return []


def _openblas_loaded() -> List[str]:
    # numpy's wheel maps its own libscipy_openblas64_ (suffixed 64-bit symbols that
    # libmlx cannot use): only a plain libopenblas serves MLX.
    return [
        lib
        for lib in _loaded_libraries()
        if os.path.basename(lib).startswith("libopenblas")
    ]


def active_blas() -> str:
    """Which BLAS serves fp32 matmuls in this process, in words."""
    if sys.platform == "darwin":
        return "Accelerate / Metal (macOS)"
    libs = _openblas_loaded()
    if libs:
        return f"OpenBLAS ({libs[0]})"
    return "reference BLAS from the mlx[cpu] wheel (slow: apt-get install libopenblas0-pthread)"


def ensure_openblas() -> None:
    """Re-execute this command with OpenBLAS preloaded, when it helps and is possible."""
    if not sys.platform.startswith("linux") or os.environ.get(NO_REEXEC):
        return
    if _openblas_loaded():
        return
    path = find_openblas()
    if path is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = ":".join(filter(None, [path, env.get("LD_PRELOAD")]))
    env[NO_REEXEC] = "1"  # never loop
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable] + sys.orig_argv[1:], env)
