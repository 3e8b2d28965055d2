# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Reading and writing files safely: JSON, safetensors, and atomic writes.

Every reader raises ``ModelFileError("<file>: <problem>")`` on bad input; every writer
assembles its output beside the destination and renames it into place, so a failure
leaves nothing half-written.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict

import mlx.core as mx

from ..errors import ModelFileError, ModelFileNotFoundError


def read_json(path: Path) -> Dict:
    """Read a JSON object from ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(path, "file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(path, f"invalid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFileError(
            path, f"expected a JSON object, found {type(data).__name__}"
        )
    return data


def check_safetensors(path: Path) -> Dict[str, Dict]:
    """Check a safetensors file's header and length; return its tensor table.

    mlx reads truncated files lazily and fails late with an unhelpful message, so
    the header is checked against the file size up front.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileNotFoundError(path, "file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelFileError(path, f"truncated safetensors file ({size} bytes)")
        n = int.from_bytes(head, "little")
        if n > size - 8:
            raise ModelFileError(
                path,
                f"truncated or corrupt safetensors file (header of {n} bytes, "
                f"file of {size} bytes)",
            )
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelFileError(
                path, "corrupt safetensors header (not JSON)"
            ) from None
    if not isinstance(header, dict):
        raise ModelFileError(path, "corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    try:
        end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        raise ModelFileError(
            path, "corrupt safetensors header (bad data_offsets)"
        ) from None
    if 8 + n + end > size:
        raise ModelFileError(
            path,
            f"truncated safetensors file: tensors need {8 + n + end} bytes, "
            f"file has {size}",
        )
    return header


def load_safetensors(path: Path) -> Dict[str, mx.array]:
    """All tensors of one safetensors file, as (memory-mapped) MLX arrays."""
    check_safetensors(path)
    try:
        return mx.load(str(path))
    except Exception as e:  # mlx raises RuntimeError / ValueError on bad data
        raise ModelFileError(path, f"cannot read safetensors ({e})") from None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_file_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    write_file_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_files_atomically(directory: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary directory inside ``directory``, then rename
    each file it wrote into ``directory``, each atomically (other files stay).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".", suffix=".tmp", dir=directory))
    try:
        write(tmp)
        for f in sorted(tmp.iterdir()):
            os.chmod(f, 0o666 & ~_umask())  # some writers (safetensors) make it 0600
            os.replace(f, directory / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_destination(dst: Path, force: bool) -> None:
    if dst.exists() and not force:
        raise ModelFileError(dst, "already exists (use --force to replace it)")


def _install(tmp: Path, dst: Path, force: bool) -> None:
    """Move the finished ``tmp`` to ``dst``; an old ``dst`` goes only with force."""
    if not dst.exists():
        os.rename(tmp, dst)
        return
    check_destination(dst, force)
    old = dst.parent / f".{dst.name}.old-{os.getpid()}"
    os.rename(dst, old)
    try:
        os.rename(tmp, dst)
    except OSError:
        os.rename(old, dst)
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()


def write_atomically(
    dst: Path, write: Callable[[Path], None], force: bool = False
) -> None:
    """Run ``write(tmp)`` on a temporary directory beside ``dst``, then rename it.

    On any failure the temporary directory is removed and ``dst`` is untouched.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private (0700)
        write(tmp)
        _install(tmp, dst, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def cache_root() -> Path:
    """``$MLX_SPECSTREAM_CACHE`` or ``~/.cache/mlx_specstream/models``."""
    root = os.environ.get("MLX_SPECSTREAM_CACHE") or "~/.cache/mlx_specstream/models"
    return Path(root).expanduser()
