# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""benchmarks/gpu/run.py: parts of a split wheel are joined back, byte for byte."""

import runpy
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_split_parts_are_joined_in_order(tmp_path):
    run = runpy.run_path(str(ROOT / "benchmarks" / "gpu" / "run.py"))
    data = bytes(range(256)) * 1000
    name = "mlx_cuda_13-0.32.4-py3-none-manylinux_2_35_x86_64.whl"
    for i, start in enumerate(range(0, len(data), 70_000)):
        part = tmp_path / f"{name}.part-a{chr(97 + i)}"
        part.write_bytes(data[start : start + 70_000])
    (tmp_path / "other.whl").write_bytes(b"x")
    joined = run["join_parts"](tmp_path)
    assert joined == [f"{name} (4 parts)"]
    assert (tmp_path / name).read_bytes() == data
    assert run["join_parts"](tmp_path) == []  # already joined: left as it is


def test_staged_calls_fit_and_join_back(tmp_path):
    """stage.py cuts wheels and model files into calls under the cap; run.py joins them."""
    stage = runpy.run_path(str(ROOT / "benchmarks" / "gpu" / "stage.py"))
    run = runpy.run_path(str(ROOT / "benchmarks" / "gpu" / "run.py"))
    src = tmp_path / "src"
    src.mkdir()
    sizes = {"big.whl": 25_000, "small.whl": 300, "empty.txt": 0, "model.bin": 17_000}
    files = []
    for i, (name, size) in enumerate(sizes.items()):
        path = src / name
        path.write_bytes(bytes((i * 7 + j) % 251 for j in range(size)))
        folder = "model" if name.startswith(("model", "empty")) else "wheels"
        files.append((path, f"{folder}/{name}"))
    cap = 10_000
    calls = stage["pack"](files, cap)
    assert len(calls) == -(-sum(sizes.values()) // cap)  # no call left part empty
    assert all(sum(n for *_, n in call) <= cap for call in calls)
    out = tmp_path / "out"
    stage["write_calls"](calls, out)
    box = tmp_path / "box"  # what the calls' `cp -r OUT/i/. STAGE/` leave there
    for i in range(len(calls)):
        shutil.copytree(out / str(i + 1), box, dirs_exist_ok=True)
    run["join_parts"](box / "wheels")
    run["join_parts"](box / "model")
    for path, name in files:
        assert (box / name).read_bytes() == path.read_bytes(), name
    assert not (box / "wheels" / "small.whl.part-000").exists()  # fitted whole


def test_cuda_libraries_of_the_interpreter_go_on_the_library_path(
    tmp_path, monkeypatch
):
    """A --target install of mlx-cuda cannot reach the nvidia-* wheels through its
    rpath; run.py names their lib folders (and their headers, for NVRTC)."""
    run = runpy.run_path(str(ROOT / "benchmarks" / "gpu" / "run.py"))
    for name in ("cu13", "cudnn", "nccl"):
        (tmp_path / "nvidia" / name / "lib").mkdir(parents=True)
    (tmp_path / "nvidia" / "cu13" / "include").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    env = run["cuda_library_env"]({"LD_LIBRARY_PATH": "/before"})
    paths = env["LD_LIBRARY_PATH"].split(":")
    for name in ("cu13", "cudnn", "nccl"):
        assert str(tmp_path / "nvidia" / name / "lib") in paths
    assert paths[-1] == "/before"
    if not Path("/usr/local/cuda").exists():
        assert env["CUDA_HOME"] == str(tmp_path / "nvidia" / "cu13")
    assert run["cuda_library_env"]({"CUDA_HOME": "/x"})["CUDA_HOME"] == "/x"
