# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The layout's contracts: dependencies run one way (train -> convert -> runtime),
no import cycles, no top-level ``convert`` or ``train`` module in the wheel, and the
runtime loads and generates without torch, the converter or the trainers."""

import os
import runpy
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_config, tiny_hf_tokenizer, tiny_model

from mlx_specstream.utils import save_model

ROOT = Path(__file__).resolve().parents[1]
NOT_RUNTIME = (
    "mlx_specstream.convert",
    "mlx_specstream.train",
    "mlx_specstream.benchmarks",
)


def test_import_graph_has_no_cycles_and_runs_one_way():
    check = runpy.run_path(str(ROOT / "scripts" / "check_imports.py"))
    assert check["problems"]() == []


def test_import_check_finds_a_cycle_and_a_wrong_way_import(tmp_path, monkeypatch):
    """The checker can fail: a copy of the tree with a cycle and an upward import."""
    check = runpy.run_path(str(ROOT / "scripts" / "check_imports.py"))
    for folder in check["FOLDERS"]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "mlx_specstream" / "a.py").write_text("from . import b\n")
    (tmp_path / "mlx_specstream" / "b.py").write_text(
        "def f():\n    from .a import x\n"
    )
    (tmp_path / "mlx_specstream" / "c.py").write_text(
        "from mlx_specstream.train import lossless\nimport torch\n"
    )
    (tmp_path / "train" / "lossless.py").write_text("")
    monkeypatch.setitem(check["problems"].__globals__, "ROOT", tmp_path)
    found = check["problems"]()
    assert any("import cycle: mlx_specstream.a -> mlx_specstream.b" in p for p in found)
    assert any(
        "runtime module mlx_specstream.c imports mlx_specstream.train" in p
        for p in found
    )
    assert any("the runtime imports torch" in p for p in found)


def test_import_check_finds_private_names_and_a_floor_broken(tmp_path, monkeypatch):
    """The checker can fail on the runtime's own rules: a model module importing
    the decoding package, and private names used across packages."""
    check = runpy.run_path(str(ROOT / "scripts" / "check_imports.py"))
    for folder in check["FOLDERS"]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    pkg = tmp_path / "mlx_specstream"
    for sub in ("models", "decoding"):
        (pkg / sub).mkdir()
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "decoding" / "tree.py").write_text("_hidden = 1\nshown = 2\n")
    (pkg / "models" / "llama.py").write_text("from ..decoding.tree import shown\n")
    (pkg / "generate.py").write_text(
        "from .decoding import tree\nfrom .decoding.tree import _hidden\n"
        "x = tree._hidden\n"
    )
    (pkg / "decoding" / "decoder.py").write_text(
        "from . import tree\ny = tree._hidden\n"
    )
    monkeypatch.setitem(check["problems"].__globals__, "ROOT", tmp_path)
    found = check["problems"]()
    assert any(
        "models module mlx_specstream.models.llama imports decoding module" in p
        for p in found
    ), found
    private = [p for p in found if "private to another package" in p]
    assert len(private) == 2, found  # generate.py twice; decoder.py is in the package
    assert all("mlx_specstream/generate.py" in p for p in private)


def test_wheel_has_no_top_level_convert_or_train(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("mlx_specstream-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"mlx_specstream", wheel.name.split("-py")[0] + ".dist-info"}
    for package in ("convert", "train", "benchmarks"):
        assert f"mlx_specstream/{package}/__init__.py" in names


def _without_torch(tmp_path: Path) -> dict:
    """An environment whose site-packages show every package but torch and peft."""
    packages = Path(site.getsitepackages()[0])
    if not (packages / "torch").is_dir():
        pytest.skip("torch is not a plain site-packages directory here")
    view = tmp_path / "site"
    view.mkdir()
    for p in packages.iterdir():
        if not p.name.startswith(("torch", "functorch", "peft")):
            (view / p.name).symlink_to(p)
    return dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{view}")


GENERATE = """
import sys
from mlx_specstream import load, generate
model, tokenizer = load(sys.argv[1])
text = generate(model, tokenizer, sys.argv[2], max_tokens=8)
import importlib.util
assert importlib.util.find_spec("torch") is None
bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "peft")
       or m.startswith({not_runtime!r})]
assert not bad, bad
print("ok", len(text) > 0)
""".format(not_runtime=NOT_RUNTIME)


def test_runtime_loads_and_generates_without_torch_converter_or_trainers(tmp_path):
    model = tiny_model()
    save_model(model, tiny_config(), tmp_path / "m")
    tiny_hf_tokenizer().save_pretrained(tmp_path / "m")
    r = subprocess.run(
        [sys.executable, "-S", "-c", GENERATE, str(tmp_path / "m"), "t5 t6 t7"],
        env=_without_torch(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0 and r.stdout.split()[0] == "ok", r.stderr[-2000:]


@pytest.mark.slow
def test_default_model_without_torch_converter_or_trainers(tmp_path):
    """The registered default model, fetched and converted on first use (cached
    by ``.ci/run``), loads and generates through the runtime alone."""
    r = subprocess.run(
        [sys.executable, "-S", "-c", GENERATE, "smollm2-135m-instruct", "Hello"],
        env=_without_torch(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0 and r.stdout.split()[0] == "ok", r.stderr[-2000:]
