# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""benchmarks/gpu/run.py: parts of a split wheel are joined back, byte for byte."""

import runpy
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
