# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Load and save models: mlx-lm / Hugging Face directories plus our stream files."""

import glob
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import load_tokenizer

from .format import SETTINGS_FILE, STREAMS_FILE, StreamArgs, stream_tensor_shapes
from .models.llama import Model, ModelArgs

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


class ModelLoadError(ValueError):
    """A model directory that cannot be loaded; the message names file and problem."""


def _read_json(path: Path) -> Dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: invalid JSON ({e})") from None


def normalise_config(config: Dict) -> Dict:
    """Fold transformers-5 ``rope_parameters`` into ``rope_theta`` / ``rope_scaling``.

    Written this way, a config also loads in mlx-lm.
    """
    config = dict(config)
    rope = config.pop("rope_parameters", None)
    if rope:
        config.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
        if rope.get("rope_type", "default") != "default":
            config.setdefault("rope_scaling", rope)
    return config


def load_config(path: Union[str, Path]) -> Dict:
    """Read ``config.json``, normalised (``normalise_config``) and checked."""
    config = normalise_config(_read_json(Path(path) / "config.json"))
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise ModelLoadError(
            f"{Path(path) / 'config.json'}: unsupported model_type "
            f"{config.get('model_type')!r} (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return config


def load_stream_args(path: Path, config: Dict) -> Optional[StreamArgs]:
    f = Path(path) / SETTINGS_FILE
    if not f.exists():
        return None
    try:
        return StreamArgs.from_dict(_read_json(f))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{f}: {e}") from None


def build_model(config: Dict, stream_args: Optional[StreamArgs] = None) -> Model:
    """A model for ``config`` with random base weights and zero streams."""
    return Model(ModelArgs.from_dict(config), stream_args)


def _load_safetensors(file: str) -> Dict[str, mx.array]:
    try:
        return mx.load(file)
    except Exception as e:  # mlx raises RuntimeError/ValueError on bad headers
        raise ModelLoadError(f"{file}: cannot read safetensors ({e})") from None


def _check_shapes(expected: Dict[str, tuple], got: Dict[str, mx.array], file: Path):
    for k, v in got.items():
        if k not in expected:
            raise ModelLoadError(f"{file}: unexpected tensor {k!r}")
        if tuple(v.shape) != tuple(expected[k]):
            raise ModelLoadError(
                f"{file}: tensor {k!r} has shape {tuple(v.shape)}, expected {expected[k]}"
            )
    missing = sorted(set(expected) - set(got))
    if missing:
        raise ModelLoadError(f"{file}: missing tensor {missing[0]!r}")


def load_model(path: Union[str, Path], lazy: bool = True) -> Model:
    """Load a model from an MLX (ours or mlx-lm) or Hugging Face safetensors directory.

    Weights are memory-mapped by ``mx.load`` and evaluated on first use unless
    ``lazy`` is False.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: not a directory")
    config = load_config(path)
    stream_args = load_stream_args(path, config)
    try:
        model = build_model(config, stream_args)
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{path / 'config.json'}: {e}") from None

    files = sorted(glob.glob(str(path / "model*.safetensors")))
    if not files:
        raise ModelLoadError(f"{path}: no model*.safetensors weight files")
    weights = {}
    for f in files:
        weights.update(_load_safetensors(f))
    weights = model.sanitize(weights)
    if (q := config.get("quantization")) is not None:
        # Quantize the same layers mlx-lm did: those whose scales were saved.
        nn.quantize(
            model,
            group_size=q["group_size"],
            bits=q["bits"],
            class_predicate=lambda p, m: f"{p}.scales" in weights,
        )
    expected = {
        k: v.shape
        for k, v in tree_flatten(model.parameters())
        if not k.startswith("streams.")
    }
    _check_shapes(expected, weights, path / "model.safetensors")
    model.load_weights(list(weights.items()), strict=False)

    if stream_args is not None and (path / STREAMS_FILE).exists():
        streams = _load_safetensors(str(path / STREAMS_FILE))
        args = model.args
        shapes = stream_tensor_shapes(
            stream_args, args.hidden_size, args.layer_dims, args.num_hidden_layers
        )
        _check_shapes(shapes, streams, path / STREAMS_FILE)
        model.streams.load_weights(list(model.streams.module_weights(streams).items()))
        # A converted base model carries all-zero streams: they draft nothing useful.
        model.has_streams = any(mx.any(v != 0).item() for v in streams.values())
    else:
        model.has_streams = False
    if not lazy:
        mx.eval(model.parameters())
    model.eval()
    return model


def save_model(model: Model, config: Dict, path: Union[str, Path]) -> None:
    """Write ``config.json``, ``model.safetensors`` and the stream files to ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    params = dict(tree_flatten(model.parameters()))
    base = {k: v for k, v in params.items() if not k.startswith("streams.")}
    mx.save_safetensors(
        str(path / "model.safetensors"), base, metadata={"format": "mlx"}
    )
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    model.streams.args.save(path)
    streams = {k: v.astype(mx.float32) for k, v in model.streams.file_weights().items()}
    mx.save_safetensors(str(path / STREAMS_FILE), streams)


def load(
    path_or_name: Union[str, Path],
    tokenizer_config: Optional[Dict[str, Any]] = None,
    lazy: bool = True,
) -> Tuple[Model, TokenizerWrapper]:
    """Load a model and its tokenizer.

    Args:
        path_or_name: a local directory, a registered name (``smollm2-135m-instruct``)
            or a Hugging Face repo id.
        tokenizer_config: extra keyword arguments for the tokenizer.
        lazy: leave weights memory-mapped until first use.

    Returns:
        ``(model, tokenizer)``.
    """
    from .calibrate import load_calibration
    from .registry import resolve

    path = resolve(path_or_name)
    model = load_model(path, lazy=lazy)
    model.path = path
    # The tree budget measured on this device by `mlx-specstream calibrate`, if any.
    model.calibration = load_calibration(path)
    tokenizer = load_tokenizer(
        path, tokenizer_config or {}, eos_token_ids=_eos_ids(path)
    )
    return model, tokenizer


def _eos_ids(path: Path) -> Optional[list]:
    """EOS ids from config.json / generation_config.json, as mlx-lm does."""
    for name in ("generation_config.json", "config.json"):
        f = path / name
        if f.exists():
            eos = _read_json(f).get("eos_token_id")
            if eos is not None:
                return [eos] if isinstance(eos, int) else list(eos)
    return None
