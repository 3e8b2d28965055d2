# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stream-side parameters in MLX: P, insertion map, stream-only adapters, pruning head.

The file format and the settings live in ``mlx_specstream/format.py``.
"""

from typing import Dict, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..format import STREAM_ADAPTER_MODULES, StreamArgs

_MODULE_NAMES = {m.replace(".", "_"): m for m in STREAM_ADAPTER_MODULES}


class LowRank(nn.Module):
    """``x -> (x @ a) @ b``, the form of every stream-side adapter."""

    def __init__(self, fin: int, rank: int, fout: int):
        super().__init__()
        self.a = mx.zeros((fin, rank))
        self.b = mx.zeros((rank, fout))

    def __call__(self, x: mx.array) -> mx.array:
        return (x @ self.a.astype(x.dtype)) @ self.b.astype(x.dtype)


class StreamParams(nn.Module):
    """All stream-side parameters of a model; zeros until weights are loaded."""

    def __init__(
        self, args: StreamArgs, hidden_size: int, layer_dims: Dict, n_layers: int
    ):
        super().__init__()
        self.args = args
        self.first_layer = n_layers - args.num_stream_layers
        g, h = args.num_streams, hidden_size
        self.stream_embed = mx.zeros((g, h))
        self.insert = (
            {
                "a": mx.zeros((g, h, args.insertion_rank)),
                "b": mx.zeros((g, args.insertion_rank, h)),
            }
            if args.insertion_rank
            else None
        )
        # layers[k][module] for MSA layer first_layer + k
        r = args.stream_adapter_rank
        self.layers = [
            (
                {
                    m.replace(".", "_"): LowRank(*_io(layer_dims[m], r))
                    for m in args.stream_adapter_modules
                }
                if r
                else {}
            )
            for _ in range(args.num_stream_layers)
        ]
        self.prune = LowRank(h, args.prune_rank, h) if args.prune_rank else None

    def insert_streams(self, h_anchor: mx.array) -> mx.array:
        """Streams for anchor states (A, h) -> (A, γ, h) (eq. 3, f = I + low rank)."""
        s = h_anchor[:, None, :] + self.stream_embed.astype(h_anchor.dtype)
        if self.insert is not None:
            a, b = self.insert["a"].astype(h_anchor.dtype), self.insert["b"].astype(
                h_anchor.dtype
            )
            # (A, 1, 1, h) @ (γ, h, r) -> (A, γ, 1, r) @ (γ, r, h) -> (A, γ, h)
            s = s + ((h_anchor[:, None, None, :] @ a) @ b).squeeze(2)
        return s

    def adapter(self, layer: int, module: str) -> Optional[LowRank]:
        """The stream-only adapter of ``module`` at absolute ``layer``, if any."""
        k = layer - self.first_layer
        if k < 0 or not self.layers or k >= len(self.layers):
            return None
        return self.layers[k].get(module.replace(".", "_"))

    def num_parameters(self) -> int:
        return sum(v.size for _, v in tree_flatten(self.parameters()))

    def file_weights(self) -> Dict[str, mx.array]:
        """Parameters under their ``streams.safetensors`` names (format.py)."""
        out = {}
        for k, v in tree_flatten(self.parameters()):
            if k.startswith("layers."):
                _, i, mod, ab = k.split(".")
                module = _MODULE_NAMES[mod]
                k = f"layers.{int(i) + self.first_layer}.{module}.lora_{ab}"
            out[k] = v
        return out

    def module_weights(self, weights: Dict[str, mx.array]) -> Dict[str, mx.array]:
        """``streams.safetensors`` names -> this module's parameter paths."""
        out = {}
        for k, v in weights.items():
            if k.startswith("layers."):
                _, i, *mod, ab = k.split(".")
                k = f"layers.{int(i) - self.first_layer}.{'_'.join(mod)}.{ab[-1]}"
            out[k] = v
        return out


def _io(dims: tuple, rank: int) -> tuple:
    fin, fout = dims
    return fin, rank, fout
