# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""mlx-specstream: Speculative Streaming decoding on Apple MLX."""

from ._version import __version__
from .batch_generate import BatchResponse, batch_generate
from .generate import GenerationResponse, generate, stream_generate
from .models.cache import make_prompt_cache
from .sample_utils import make_logits_processors, make_sampler
from .utils import load

__all__ = [
    "__version__",
    "load",
    "generate",
    "stream_generate",
    "batch_generate",
    "BatchResponse",
    "GenerationResponse",
    "make_prompt_cache",
    "make_sampler",
    "make_logits_processors",
]
