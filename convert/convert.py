# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Convert a PyTorch (Hugging Face) or GGUF checkpoint plus stream parameters to MLX.

    mlx-specstream convert --torch-path SRC --mlx-path DST [--dtype float16]
        [--quantize --q-bits 4 --q-group-size 64] [--adapter-path LORA_DIR] [--force]

Every tensor is checked before anything is written; the output is assembled in a
temporary directory beside DST and renamed into place at the end.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.utils import quantize_model
from tqdm import tqdm

from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE, StreamArgs
from mlx_specstream.loading.files import check_destination, write_atomically
from mlx_specstream.loading.gguf import find_gguf, read_gguf, save_tokenizer
from mlx_specstream.loading.model_io import (
    build_model,
    normalise_config,
    save_model,
    take_draft_vocab,
)

from .checkpoint import (
    Origins,
    Weights,
    copy_tokenizer,
    load_hf_weights,
    load_streams,
    read_hf_config,
)
from .errors import ConvertError, ConvertFileNotFoundError
from .weights import check_base_weights, check_stream_weights, merge_lora

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
Q_BITS = (2, 3, 4, 5, 6, 8)
Q_GROUP_SIZES = (32, 64, 128)


@dataclass
class Source:
    """A checkpoint read into memory (weights may still be lazy)."""

    directory: Path  # where stream files are looked for by default
    config: Dict
    weights: Weights
    origins: Origins
    weights_file: Path
    write_tokenizer: Callable[[Path], None]


def _read_hf(src: Path) -> Source:
    config = read_hf_config(src)
    weights, origins, file = load_hf_weights(src)
    return Source(src, config, weights, origins, file, lambda d: copy_tokenizer(src, d))


def _read_gguf(src: Path) -> Source:
    gguf = read_gguf(src)
    file = find_gguf(src)
    weights = {}
    bar = tqdm(
        gguf.tensors(),
        total=gguf.tensor_count,
        desc="dequantize",
        unit="tensor",
        disable=None,
    )
    for name, w in bar:
        mx.eval(w)
        weights[name] = w
    return Source(
        file.parent,
        gguf.config,
        weights,
        {k: file for k in weights},
        file,
        lambda d: save_tokenizer(gguf, d),
    )


def read_source(src: Path) -> Source:
    """Read a Hugging Face directory, a ``.gguf`` file or a directory with one."""
    if not src.exists():
        raise ConvertFileNotFoundError(src, "no such file or directory")
    if src.is_file():
        if src.suffix != ".gguf":
            raise ConvertError(src, "not a model directory or a .gguf file")
        return _read_gguf(src)
    if not (src / "config.json").exists() and any(src.glob("*.gguf")):
        return _read_gguf(src)
    return _read_hf(src)


def _stream_args(src: Source, streams_dir: Path) -> tuple:
    found = load_streams(streams_dir)
    # normalised: a multimodal config's layers are its text model's
    n = normalise_config(src.config)["num_hidden_layers"]
    if found is None:
        args = StreamArgs()
        args.num_stream_layers = min(args.num_stream_layers, n)
        print(
            f"warning: {streams_dir}: no {SETTINGS_FILE}; converting with zero "
            f"(untrained) streams: γ={args.num_streams}, Ns={args.num_stream_layers}",
            file=sys.stderr,
        )
        return args, None
    args, tensors = found
    if args.num_stream_layers > n:
        raise ConvertError(
            streams_dir / SETTINGS_FILE,
            f"num_stream_layers={args.num_stream_layers} exceeds the model's {n} layers",
        )
    return args, tensors


def convert(
    torch_path: Union[str, Path],
    mlx_path: Union[str, Path],
    dtype: str = "float32",
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    adapter_path: Optional[Union[str, Path]] = None,
    force: bool = False,
    streams_path: Optional[Union[str, Path]] = None,
) -> Path:
    """Convert a checkpoint and its stream parameters into an MLX directory.

    Args:
        torch_path: a Hugging Face directory (config.json + safetensors or
            pytorch_model.bin, tokenizer files, optional stream files), a Llama
            GGUF file, or a directory holding one GGUF file.
        mlx_path: the output directory; must not exist unless ``force``.
        dtype: float32, float16 or bfloat16 for the base weights (streams stay
            float32).
        quantize: quantize the base linear and embedding layers (mlx-lm affine).
        q_bits: bits per weight when quantizing.
        q_group_size: quantization group size.
        adapter_path: a PEFT LoRA directory to merge into the base weights first.
        force: replace an existing ``mlx_path`` (once the new one is complete).
        streams_path: directory with ``speculative_streaming.json`` and
            ``streams.safetensors`` (default: beside the checkpoint).

    Returns:
        ``mlx_path``.

    Raises:
        ConvertError: bad input; the message names the file and the problem.
    """
    src, dst = Path(torch_path).expanduser(), Path(mlx_path).expanduser()
    if dtype not in DTYPES:
        raise ConvertError(
            dst, f"unsupported dtype {dtype!r} (choose from {', '.join(DTYPES)})"
        )
    if quantize and (q_bits not in Q_BITS or q_group_size not in Q_GROUP_SIZES):
        raise ConvertError(
            dst, f"unsupported quantization: {q_bits} bits, group size {q_group_size}"
        )
    check_destination(dst, force)
    if src.exists() and dst.exists() and src.resolve() == dst.resolve():
        raise ConvertError(dst, "output is the input checkpoint")

    source = read_source(src)
    streams_dir = Path(streams_path).expanduser() if streams_path else source.directory
    adapter = Path(adapter_path).expanduser() if adapter_path else None
    model, config = build_converted(source, DTYPES[dtype], streams_dir, adapter)
    if quantize:
        model, config = _quantize(model, config, q_bits, q_group_size)

    def write(tmp: Path) -> None:
        save_model(model, config, tmp)
        source.write_tokenizer(tmp)

    write_atomically(dst, write, force)
    return dst


def build_converted(
    source: Source, dtype: mx.Dtype, streams_dir: Path, adapter: Optional[Path]
) -> tuple:
    """Check every tensor, merge the adapter, cast, and load them into a model.

    Returns:
        ``(model, config)``, config normalised for ``config.json``.
    """
    config = normalise_config(source.config)
    stream_args, stream_tensors = _stream_args(source, streams_dir)
    try:
        model = build_model(config, stream_args)
    except (TypeError, ValueError, KeyError) as e:
        raise ConvertError(
            source.weights_file.parent / "config.json", f"invalid config ({e})"
        ) from None
    weights = check_base_weights(
        source.weights, source.origins, model, source.weights_file
    )
    if adapter is not None:
        weights, n = merge_lora(weights, adapter, getattr(model, "weight_name", None))
        print(f"merged LoRA into {n} modules from {adapter}", file=sys.stderr)
    if stream_tensors is not None:
        take_draft_vocab(model, stream_tensors, streams_dir / STREAMS_FILE)
        stream_tensors = check_stream_weights(stream_tensors, model, streams_dir)
    for k in tqdm(list(weights), desc="convert", unit="tensor", disable=None):
        weights[k] = weights[k].astype(dtype)
        mx.eval(weights[k])  # read (and cast) one tensor at a time
    model.load_weights(list(weights.items()), strict=False)
    if stream_tensors is not None:
        streams = model.streams.module_weights(stream_tensors)
        model.streams.load_weights(list(streams.items()))
    return model, config


def _quantize(model, config: Dict, bits: int, group_size: int) -> tuple:
    # Stream parameters are plain arrays, not Linear layers: they stay float32.
    model, config = quantize_model(model, config, group_size, bits)
    if not any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()):
        print(
            f"warning: no linear layer has an input size divisible by "
            f"{group_size}; nothing was quantized",
            file=sys.stderr,
        )
    return model, config


def setup_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlx-specstream convert",
        description="Convert a PyTorch / GGUF checkpoint with speculative streams to MLX.",
    )
    parser.add_argument(
        "--torch-path", required=True, help="HF model directory or .gguf file"
    )
    parser.add_argument("--mlx-path", required=True, help="output MLX directory")
    parser.add_argument(
        "--dtype", default="float32", choices=list(DTYPES), help="base weights dtype"
    )
    parser.add_argument(
        "--quantize", "-q", action="store_true", help="quantize the base model"
    )
    parser.add_argument("--q-bits", type=int, default=4, choices=Q_BITS)
    parser.add_argument("--q-group-size", type=int, default=64, choices=Q_GROUP_SIZES)
    parser.add_argument(
        "--adapter-path", default=None, help="PEFT LoRA directory to merge"
    )
    parser.add_argument(
        "--streams-path",
        default=None,
        help="directory with speculative_streaming.json + streams.safetensors "
        "(default: the checkpoint's directory)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing --mlx-path"
    )
    return parser


def main(argv: Optional[list] = None) -> None:
    """CLI entry point; on bad input prints ``error: <file>: <problem>`` and exits 1."""
    args = setup_arg_parser().parse_args(argv)
    try:
        out = convert(
            args.torch_path,
            args.mlx_path,
            dtype=args.dtype,
            quantize=args.quantize,
            q_bits=args.q_bits,
            q_group_size=args.q_group_size,
            adapter_path=args.adapter_path,
            force=args.force,
            streams_path=args.streams_path,
        )
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except OSError as e:  # disk full, permissions, ...
        print(
            f"error: {e.filename or args.mlx_path}: {e.strerror or e}", file=sys.stderr
        )
        raise SystemExit(1) from None
    print(f"saved {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
