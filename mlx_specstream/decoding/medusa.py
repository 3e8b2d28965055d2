# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Medusa-1 heads (Cai et al. 2024), the paper's main baseline, as a drafter.

Head k (k = 1..K) maps the frozen base model's final normalised hidden state h_t to
logits for token t + 1 + k through one residual block::

    z_k = W_k (h + SiLU(A_k h + b_k))

W_k starts as the base LM head and A_k, b_k at zero, so a fresh head predicts what
the LM head does. The heads draft; the main model verifies, so greedy output is
unchanged. Files (written by ``convert/medusa.py``): ``medusa.json`` with
``num_heads``, ``hidden_size``, ``vocab_size`` and ``medusa.safetensors`` (float32)
with ``heads.{k}.block.weight`` (h, h), ``heads.{k}.block.bias`` (h) and
``heads.{k}.lm_head.weight`` (V, h) for k = 0..K-1.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Sequence, Union

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..errors import ModelFileError, ModelFileNotFoundError
from ..loading.files import load_safetensors, read_json
from ..loading.model_io import check_shapes
from .drafters import StreamDrafter, StreamTopK, topk_logprobs
from .tree import Tree, TreeShape

MEDUSA_CONFIG = "medusa.json"
MEDUSA_WEIGHTS = "medusa.safetensors"


def medusa_tensor_shapes(
    num_heads: int, hidden_size: int, vocab_size: int
) -> Dict[str, tuple]:
    """File tensor names and shapes of ``num_heads`` heads."""
    shapes = {}
    for k in range(num_heads):
        shapes[f"heads.{k}.block.weight"] = (hidden_size, hidden_size)
        shapes[f"heads.{k}.block.bias"] = (hidden_size,)
        shapes[f"heads.{k}.lm_head.weight"] = (vocab_size, hidden_size)
    return shapes


class MedusaHead(nn.Module):
    """One head: a SiLU residual block, then its own LM head."""

    def __init__(self, hidden_size: int, vocab_size: int):
        super().__init__()
        self.block = nn.Linear(hidden_size, hidden_size, bias=True)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)

    def __call__(self, h: mx.array) -> mx.array:
        return self.lm_head(h + nn.silu(self.block(h)))


class MedusaHeads(nn.Module):
    """K Medusa heads; ``heads(h (..., h)) -> logits (..., K, V)``."""

    def __init__(self, num_heads: int, hidden_size: int, vocab_size: int):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1, got {num_heads}")
        self.num_heads, self.hidden_size, self.vocab_size = (
            num_heads,
            hidden_size,
            vocab_size,
        )
        self.heads = [MedusaHead(hidden_size, vocab_size) for _ in range(num_heads)]

    def __call__(self, h: mx.array) -> mx.array:
        return mx.stack([head(h) for head in self.heads], axis=-2)

    @classmethod
    def from_lm_head(cls, lm_head: mx.array, num_heads: int = 4) -> "MedusaHeads":
        """Fresh heads: blocks at zero, every W_k a copy of ``lm_head`` (V, h)."""
        V, h = lm_head.shape
        heads = cls(num_heads, h, V)
        for head in heads.heads:
            head.block.weight = mx.zeros((h, h))
            head.block.bias = mx.zeros((h,))
            head.lm_head.weight = mx.array(lm_head, dtype=mx.float32)
        return heads

    @classmethod
    def from_model(cls, model, num_heads: int = 4) -> "MedusaHeads":
        """Fresh heads initialised from ``model``'s LM head (tied or not, dequantised)."""
        layer = (
            model.model.embed_tokens
            if model.args.tie_word_embeddings
            else model.lm_head
        )
        w = layer.weight
        if hasattr(layer, "scales"):  # quantized: heads stay float32
            w = mx.dequantize(
                w, layer.scales, layer.biases, layer.group_size, layer.bits
            )
        return cls.from_lm_head(w, num_heads)

    def num_parameters(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.parameters()))

    def save(self, path: Union[str, Path]) -> None:
        """Write ``medusa.json`` and ``medusa.safetensors`` (float32) into ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        weights = {k: v.astype(mx.float32) for k, v in tree_flatten(self.parameters())}
        mx.save_safetensors(str(path / MEDUSA_WEIGHTS), weights)
        config = dict(
            num_heads=self.num_heads,
            hidden_size=self.hidden_size,
            vocab_size=self.vocab_size,
        )
        (path / MEDUSA_CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def _read_config(file: Path) -> Dict[str, int]:
    config = read_json(file)
    keys = ("num_heads", "hidden_size", "vocab_size")
    for k in keys:
        v = config.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ModelFileError(file, f"'{k}' must be a positive integer, got {v!r}")
    return {k: config[k] for k in keys}


def load_medusa(path: Union[str, Path], dtype: mx.Dtype = mx.float32) -> MedusaHeads:
    """Load heads from a directory with ``medusa.json`` and ``medusa.safetensors``.

    Args:
        path: the directory written by ``mlx-specstream medusa-train``.
        dtype: compute dtype of the heads (float16 halves the memory traffic).

    Raises:
        ModelFileError: a missing or corrupt file or a tensor of the wrong shape;
            the message names the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileNotFoundError(path, "not a directory")
    config = _read_config(path / MEDUSA_CONFIG)
    file = path / MEDUSA_WEIGHTS
    weights = load_safetensors(file)
    check_shapes(medusa_tensor_shapes(**config), weights, file)
    heads = MedusaHeads(**config)
    heads.load_weights([(k, v.astype(dtype)) for k, v in weights.items()])
    mx.eval(heads.parameters())
    heads.eval()
    return heads


@dataclass
class MedusaDrafter:
    """Drafts trees from Medusa heads instead of the speculative streams.

    The decoder calls ``head_logits`` with the accepted node's final normalised hidden
    state; the tree is then built exactly as ``StreamDrafter`` builds it, head k
    standing in for stream k.
    """

    heads: MedusaHeads
    shape: TreeShape = field(default_factory=TreeShape)

    def __post_init__(self):
        if self.top_k <= 0:
            raise ValueError(f"the Medusa drafter needs top_k > 0, got {self.top_k}")
        self._trees = StreamDrafter(self.shape)

    @property
    def top_k(self) -> int:
        return self.shape.top_k

    def head_logits(self, hidden: mx.array) -> mx.array:
        """(h,) final normalised hidden state -> (K, V) logits of the K heads (lazy:
        the decoder takes their top-k with the rest of the pass's read)."""
        return self.heads(hidden)

    def candidates(self, hidden: mx.array) -> StreamTopK:
        """(h,) final normalised hidden state -> per-head top-k, (K, top_k) each."""
        return topk_logprobs(self.head_logits(hidden), self.top_k)

    def draft(self, root: int, streams: StreamTopK, history: Sequence[int]) -> Tree:
        return Tree.from_paths(root, self._trees.paths(streams))
