# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Read and write MLX model directories: mlx-lm / Hugging Face layout plus our stream files."""

import glob
from pathlib import Path
from typing import Dict, Optional, Union

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten
from mlx_lm.utils import save_config
from mlx_lm.utils import save_model as mlx_lm_save_model

from ..decoding.ngrams import NgramStore
from ..decoding.state import state_of
from ..errors import ModelFileError
from ..format import (
    DRAFT_CORPUS,
    DRAFT_VOCAB,
    SETTINGS_FILE,
    STREAMS_FILE,
    SUPPORTED_ARCHITECTURES,
    StreamArgs,
    stream_tensor_shapes,
)
from ..models import families, gemma3
from ..models.llama import Model
from .files import load_safetensors, read_json

SUPPORTED_MODEL_TYPES = tuple(SUPPORTED_ARCHITECTURES)


def normalise_config(config: Dict) -> Dict:
    """Fold transformers-5 ``rope_parameters`` into ``rope_theta`` / ``rope_scaling``
    (Gemma 3's, keyed by layer type, also into ``rope_local_base_freq``); a
    multimodal ``gemma3`` config becomes its text model's.

    Written this way, a config also loads in mlx-lm.
    """
    config = dict(config)
    if config.get("model_type") == "gemma3" and "text_config" in config:
        config = gemma3.text_config(config)
    rope = config.pop("rope_parameters", None)
    if rope and gemma3.FULL in rope:
        gemma3.fold_rope_parameters(config, rope)
    elif rope:
        config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
        if "partial_rotary_factor" in rope:  # Phi-3 / Phi-4-mini; mlx-lm reads it here
            config.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
        if rope.get("rope_type", "default") != "default":
            # mlx-lm's phi3 requires "type"; the others read "type" or "rope_type".
            config.setdefault("rope_scaling", {"type": rope["rope_type"], **rope})
    return config


def load_config(path: Union[str, Path]) -> Dict:
    """Read ``config.json``, normalised (``normalise_config``) and checked."""
    file = Path(path) / "config.json"
    config = normalise_config(read_json(file))
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelFileError(
            file,
            f"unsupported model_type {config.get('model_type')!r} "
            f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})",
        )
    return config


def load_stream_args(directory: Union[str, Path]) -> Optional[StreamArgs]:
    """The stream settings in ``directory``, or None where it has none."""
    f = Path(directory) / SETTINGS_FILE
    if not f.exists():
        return None
    try:
        return StreamArgs.from_dict(read_json(f))
    except (TypeError, ValueError) as e:
        if isinstance(e, ModelFileError):
            raise
        raise ModelFileError(f, str(e)) from None


def build_model(config: Dict, stream_args: Optional[StreamArgs] = None) -> Model:
    """A model for ``config`` with random base weights and zero streams."""
    return families.build_model(config, stream_args)


def check_shapes(
    expected: Dict[str, tuple],
    got: Dict[str, mx.array],
    file: Path,
    origins: Optional[Dict[str, Path]] = None,
    unexpected: str = "",
    implied_by: str = "expected",
    count_missing: bool = False,
) -> None:
    """Every tensor of ``got`` is expected, with the expected shape, and none is missing.

    The optional arguments add detail to the messages (the converter's): ``origins``
    names the file each tensor came from (default ``file``), ``unexpected`` says why a
    tensor is unexpected, ``implied_by`` what gives the expected shape, and
    ``count_missing`` how many more tensors are missing.
    """
    for k, v in got.items():
        where = origins.get(k, file) if origins else file
        if k not in expected:
            raise ModelFileError(where, f"unexpected tensor {k!r}{unexpected}")
        if tuple(v.shape) != tuple(expected[k]):
            raise ModelFileError(
                where,
                f"tensor {k!r} has shape {tuple(v.shape)}, "
                f"{implied_by} {tuple(expected[k])}",
            )
    missing = sorted(set(expected) - set(got))
    if missing:
        n = len(missing) - 1
        more = f" (and {n} more)" if count_missing and n else ""
        raise ModelFileError(file, f"missing tensor {missing[0]!r}{more}")


def base_shapes(model: Model) -> Dict[str, tuple]:
    """Name -> shape of every base (non-stream) parameter of ``model``."""
    return {
        k: tuple(v.shape)
        for k, v in tree_flatten(model.parameters())
        if not k.startswith("streams.")
    }


def stream_shapes(model: Model) -> Dict[str, tuple]:
    """Name -> shape of every tensor ``streams.safetensors`` holds for ``model``."""
    a = model.args
    return stream_tensor_shapes(
        model.streams.args, a.hidden_size, a.layer_dims, a.num_hidden_layers
    )


def load_base_weights(model: Model, weights: Dict[str, mx.array], file: Path) -> None:
    """Check base weights (Hugging Face names) against ``model`` and load them."""
    weights = model.sanitize(dict(weights))
    check_shapes(base_shapes(model), weights, file)
    model.load_weights(list(weights.items()), strict=False)


def load_stream_weights(model: Model, directory: Union[str, Path]) -> bool:
    """Load ``streams.safetensors`` from ``directory`` when it is there.

    Returns:
        Whether the model now has trained streams: a converted base model carries
        all-zero streams, and those draft nothing useful.
    """
    file = Path(directory) / STREAMS_FILE
    if not file.exists():
        return False
    streams = load_safetensors(file)
    take_draft_vocab(model, streams, file)
    check_shapes(stream_shapes(model), streams, file)
    model.streams.load_weights(list(model.streams.module_weights(streams).items()))
    return any(mx.any(v != 0).item() for v in streams.values())


def take_draft_vocab(model: Model, streams: Dict[str, mx.array], file: Path) -> None:
    """Pop the optional ``draft_vocab`` and ``draft_corpus`` tensors from a stream
    file's tensors, check them, and make the model draft from them."""
    draft_vocab = streams.pop(DRAFT_VOCAB, None)
    corpus = streams.pop(DRAFT_CORPUS, None)
    try:
        if draft_vocab is not None:
            model.set_draft_vocab(np.array(draft_vocab))  # checks the ids
        if corpus is not None:
            corpus = np.array(corpus)
            if corpus.size and corpus.max() >= model.args.vocab_size:
                raise ValueError(
                    f"draft_corpus id {corpus.max()} is outside the vocabulary "
                    f"[0, {model.args.vocab_size})"
                )
            state_of(model).ngrams = NgramStore(corpus, model.args.vocab_size)
    except ValueError as e:
        raise ModelFileError(file, str(e)) from None


def load_model(path: Union[str, Path], lazy: bool = True) -> Model:
    """Load a model from an MLX (ours or mlx-lm) or Hugging Face safetensors directory.

    Weights are memory-mapped by ``mx.load`` and evaluated on first use unless
    ``lazy`` is False.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(path, "not a directory")
    config = load_config(path)
    stream_args = load_stream_args(path)
    try:
        model = build_model(config, stream_args)
    except (TypeError, ValueError) as e:
        raise ModelFileError(path / "config.json", str(e)) from None

    files = sorted(glob.glob(str(path / "model*.safetensors")))
    if not files:
        raise ModelFileError(path, "no model*.safetensors weight files")
    weights = {}
    for f in files:
        weights.update(load_safetensors(f))
    if (q := config.get("quantization")) is not None:
        # Quantize the same layers mlx-lm did: those whose scales were saved, under
        # the model's names (a multimodal Gemma 3's are renamed by sanitize).
        scaled = set(model.sanitize(dict(weights)))
        nn.quantize(
            model,
            group_size=q["group_size"],
            bits=q["bits"],
            class_predicate=lambda p, m: f"{p}.scales" in scaled,
        )
    load_base_weights(model, weights, path / "model.safetensors")
    state = state_of(model)
    state.path = path
    state.has_streams = stream_args is not None and load_stream_weights(model, path)
    if not lazy:
        mx.eval(model.parameters())
    model.eval()
    return model


class _BaseWeights(nn.Module):
    """The base model's modules without the streams, under their own names."""

    def __init__(self, model: Model):
        super().__init__()
        self.model = model.model
        if "lm_head" in model:
            self.lm_head = model.lm_head


def save_model(model: Model, config: Dict, path: Union[str, Path]) -> None:
    """Write ``config.json``, the base weights and the stream files to ``path``.

    Base weights and config go through mlx-lm's writers (sharded above 5 GB, with
    an index), so the directory is also an mlx-lm model directory.
    """
    path = Path(path)
    mlx_lm_save_model(path, _BaseWeights(model))
    save_config(dict(config), path / "config.json")
    model.streams.args.save(path)
    streams = {k: v.astype(mx.float32) for k, v in model.streams.file_weights().items()}
    if model.draft_vocab is not None:
        streams[DRAFT_VOCAB] = mx.array(model.draft_vocab, mx.int32)
    ngrams = state_of(model).ngrams
    if ngrams is not None:
        streams[DRAFT_CORPUS] = mx.array(ngrams.corpus, mx.int32)
    mx.save_safetensors(str(path / STREAMS_FILE), streams)
