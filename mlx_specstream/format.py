# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Speculative stream parameters and their on-disk format (arXiv 2402.11131 §3.2).

A model directory (PyTorch checkpoint or MLX) carries streams as two files beside the
base model:

- ``speculative_streaming.json``: the settings, ``StreamArgs`` below.
- ``streams.safetensors``: the tensors, always float32, named::

    stream_embed                         (γ, h)      P, added once at layer N - Ns
    insert.a                             (γ, h, ri)  per-stream insertion map
    insert.b                             (γ, ri, h)    S_j = M + (M a_j) b_j + P_j
    layers.{i}.{module}.lora_a           (in, r)     stream-only adapters, layers
    layers.{i}.{module}.lora_b           (r, out)      i in [N - Ns, N), module in
                                                       STREAM_ADAPTER_MODULES
    prune.a                              (h, rp)     early-exit adapter at layer N - Ns:
    prune.b                              (rp, h)       o(M) = M + (M a) b
    draft_vocab                          (K,) int32  optional: the token ids streams
                                                     draft from, most frequent first
    draft_corpus                         (L,) int32  optional: the model's own answers,
                                                     -1 after each (``ngrams.py``)

Adapters are applied as ``y = W x + ((x @ lora_a) @ lora_b)`` with any scale folded
into ``lora_b``. ``i`` is the absolute layer index. Missing optional tensors
(insertion map, adapters, pruning adapter) mean rank 0. Without ``draft_vocab``
streams draft from the whole vocabulary; with it (distinct ids in ``[0, V)``) stream
logits and their top-k cover those K tokens only (FR-Spec, arXiv 2502.14856), while
verification still uses the whole vocabulary, so decoding output is the same. mlx-lm ignores both files,
so an MLX directory of ours also loads in mlx-lm as the plain base model.
"""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List

# The base models streams are defined for: config.json's model_type -> the Hugging
# Face architecture (config.json's "architectures") of its causal LM.
SUPPORTED_ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma3_text": "Gemma3ForCausalLM",
    "gemma3": "Gemma3ForConditionalGeneration",  # served as its text part
    "phi3": "Phi3ForCausalLM",
}
SETTINGS_FILE = "speculative_streaming.json"
STREAMS_FILE = "streams.safetensors"
DRAFT_VOCAB = "draft_vocab"  # the optional int32 tensor of STREAMS_FILE
# The optional int32 corpus of the model's own answers (ngrams.py), also in STREAMS_FILE
DRAFT_CORPUS = "draft_corpus"
STREAM_ADAPTER_MODULES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@dataclass
class StreamArgs:
    """Speculative Streaming settings (``speculative_streaming.json``).

    Args:
        num_streams: γ, the number of speculative streams (stream j predicts t+1+j).
        num_stream_layers: Ns, how many top layers run multi-stream attention.
        mode: "lossless" (base frozen, stream-only adapters) or "shared" (a LoRA
            shared by main and streams, merged into the base weights on conversion).
        stream_adapter_rank: rank of the stream-only adapters (0: none).
        stream_adapter_modules: which linear layers of the MSA layers carry them.
        insertion_rank: rank of the per-stream insertion map (0: identity, f(M) = M).
        prune_rank: rank of the early-exit pruning adapter (0: no pruning head).
        prune_threshold: drop a draft node whose early-exit transition probability
            is below this (0: no pruning).
    """

    num_streams: int = 4
    num_stream_layers: int = 8
    mode: str = "lossless"
    stream_adapter_rank: int = 0
    stream_adapter_modules: List[str] = field(
        default_factory=lambda: list(STREAM_ADAPTER_MODULES)
    )
    insertion_rank: int = 0
    prune_rank: int = 0
    prune_threshold: float = 0.0

    def __post_init__(self):
        if self.num_streams < 1:
            raise ValueError(f"num_streams must be >= 1, got {self.num_streams}")
        if self.num_stream_layers < 1:
            raise ValueError(
                f"num_stream_layers must be >= 1, got {self.num_stream_layers}"
            )
        if self.mode not in ("lossless", "shared"):
            raise ValueError(f"mode must be 'lossless' or 'shared', got {self.mode!r}")
        for m in self.stream_adapter_modules:
            if m not in STREAM_ADAPTER_MODULES:
                raise ValueError(f"unknown stream adapter module {m!r}")

    @classmethod
    def from_dict(cls, params: Dict) -> "StreamArgs":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in params.items() if k in names})

    def to_dict(self) -> Dict:
        return asdict(self)

    def save(self, directory: Path) -> None:
        with open(Path(directory) / SETTINGS_FILE, "w") as f:
            json.dump(self.to_dict(), f, indent=2)


def stream_tensor_shapes(
    args: StreamArgs, hidden_size: int, layer_dims: Dict[str, tuple], num_layers: int
) -> Dict[str, tuple]:
    """Expected shape of every tensor in ``streams.safetensors``.

    Args:
        layer_dims: module name (as in STREAM_ADAPTER_MODULES) -> (in, out) features.
    """
    g, h = args.num_streams, hidden_size
    shapes = {"stream_embed": (g, h)}
    if args.insertion_rank:
        shapes["insert.a"] = (g, h, args.insertion_rank)
        shapes["insert.b"] = (g, args.insertion_rank, h)
    if args.stream_adapter_rank:
        r = args.stream_adapter_rank
        for i in range(num_layers - args.num_stream_layers, num_layers):
            for m in args.stream_adapter_modules:
                fin, fout = layer_dims[m]
                shapes[f"layers.{i}.{m}.lora_a"] = (fin, r)
                shapes[f"layers.{i}.{m}.lora_b"] = (r, fout)
    if args.prune_rank:
        shapes["prune.a"] = (h, args.prune_rank)
        shapes["prune.b"] = (args.prune_rank, h)
    return shapes
