# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""benchmarks/overhead.py end to end on a tiny random model (nothing downloaded)."""

import importlib.util
import json
from pathlib import Path

import pytest

from mlx_specstream.blas import NO_REEXEC
from mlx_specstream.loading.registry import DEFAULT_MODEL

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "overhead.py"
TINY = [
    "--layers", "2", "--hidden", "32", "--heads", "2", "--kv-heads", "1",
    "--vocab", "128", "--stream-layers", "1", "--streams", "3",
    "--tokens", "8", "--prompt-tokens", "8", "--repeats", "1", "--budget", "6",
]  # fmt: skip
PASSES = ("tree", "likely", "accepted")


@pytest.fixture(scope="module")
def overhead():
    """The script as a module, loaded from its file (as an older checkout would
    run it: no installed ``mlx_specstream.benchmarks`` needed)."""
    spec = importlib.util.spec_from_file_location("overhead_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _check_figures(figures, passes=PASSES):
    assert figures["mlx_lm.ms_per_token"] > 0
    assert figures["plain.ms_per_token"] > 0
    assert figures["ratio.plain_vs_mlx_lm"] > 0
    for p in passes:
        assert figures[f"{p}.ms_per_pass"] > 0, p
        assert figures[f"{p}.tokens_per_pass"] >= 1, p
        assert figures[f"{p}.ms_per_token"] > 0, p
        assert figures[f"ratio.{p}_pass_vs_mlx_lm"] > 0, p
        assert figures[f"ratio.{p}_pass_vs_plain"] > 0, p
        reads = figures[f"{p}.host_reads"]  # None where Step has no host_reads
        assert reads is None or reads >= 0, p


def test_random_model_in_process(overhead, tmp_path, capsys):
    out = tmp_path / "o.json"
    report = overhead.run(overhead.parse_args(TINY + ["--out", str(out)]))
    assert report["ok"]
    saved = json.loads(out.read_text())
    assert saved["ok"] and saved["random_model"]
    assert {"date", "load", "mlx", "info", "figures", "checks"} <= set(saved)
    assert len(saved["load"]) == 2
    assert list(saved["figures"]) == ["median"]
    _check_figures(saved["figures"]["median"])
    (check,) = saved["checks"][""]
    # Speculative == plain greedy, and mlx-lm's greedy tokens are the same.
    assert check["ours_identical"] and check["mlx_lm_identical"]
    assert check["strict_mlx_lm"]  # the random model is float32 on both sides
    assert len(check["plain_tokens"]) == 8
    info = saved["info"][""]
    assert (info["layers"], info["hidden"], info["num_streams"]) == (2, 32, 3)
    assert info["prompt_tokens"] == 8 and info["has_streams"]
    text = capsys.readouterr().out
    for label in ("mlx-lm ms/token", "plain ms/token", "tree ms/pass",
                  "likely tokens/pass", "accepted host reads/pass",
                  "tree pass / mlx-lm token", "tree pass / plain step"):  # fmt: skip
        assert f"| {label} |" in text, label
    assert "MISMATCH" not in text
    assert "speculative == plain greedy" in text


def test_worker_json_and_before_after_table(overhead, tmp_path, capsys, monkeypatch):
    args = overhead.parse_args(TINY + ["--passes", "tree,accepted"])
    model = str(overhead.write_random_model(tmp_path / "m", args))
    # The worker prints its figures as one marked JSON line.
    flags = ["--worker", "--model", model, "--random-prompt", "--strict-mlx-lm"]
    overhead.run(overhead.parse_args(TINY + flags))
    lines = [x for x in capsys.readouterr().out.splitlines()
             if x.startswith(overhead.JSON_MARK)]  # fmt: skip
    assert len(lines) == 1
    worker = json.loads(lines[0][len(overhead.JSON_MARK) :])
    assert worker["check"]["ok"]
    _check_figures(worker["figures"])

    # Both sides, alternating rounds; each worker in process here (a subprocess
    # per side costs ~10 s of imports on the test machine).
    calls = []

    def fake_worker(src, a, model_ref, strict, random_model):
        calls.append(src)
        assert strict and random_model
        return overhead._measure(a, model_ref, strict, random_model)

    monkeypatch.setattr(overhead, "run_worker", fake_worker)
    out = tmp_path / "ba.json"
    report = overhead.run(
        overhead.parse_args(
            TINY + ["--passes", "tree,accepted", "--baseline-src", str(tmp_path),
                    "--rounds", "2", "--out", str(out)]  # fmt: skip
        )
    )
    assert report["ok"]
    # before, after, then after, before
    assert calls == [tmp_path, overhead.CHECKOUT, overhead.CHECKOUT, tmp_path]
    saved = json.loads(out.read_text())
    assert list(saved["figures"]) == ["before", "after", "after / before"]
    for side in ("before", "after"):
        _check_figures(saved["figures"][side], ("tree", "accepted"))
        assert len(saved["runs"][side]) == 2
        assert all(c["ok"] for c in saved["checks"][side])
    text = capsys.readouterr().out
    assert "| figure | before | after | after / before |" in text
    assert "likely" not in text.split("| figure |")[1]  # only the passes asked for


def test_mismatch_is_reported_and_fails(overhead, monkeypatch, capsys):
    assert overhead._first_difference([1, 2, 3], [1, 2, 3, 9], 3) is None
    assert overhead._first_difference([1, 5, 3], [1, 2, 3], 3) == 1
    check = dict(
        ours_identical=False,
        ours_mismatch={"tree": 4},
        mlx_lm_identical=False,
        mlx_lm_first_difference=2,
        strict_mlx_lm=True,
        ok=False,
        tokens_checked=8,
    )
    lines = overhead.check_lines(check, "after")
    assert lines[0].startswith("after: MISMATCH ours") and "'tree': 4" in lines[0]
    assert lines[1].startswith("after: MISMATCH mlx-lm")
    assert "note mlx-lm" in overhead.check_lines({**check, "strict_mlx_lm": False})[1]
    monkeypatch.setenv(NO_REEXEC, "1")  # never re-exec pytest
    monkeypatch.setattr(overhead, "run", lambda args: {"ok": False})
    with pytest.raises(SystemExit) as e:
        overhead.main(TINY)
    assert e.value.code == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_model_flag(overhead):
    assert overhead.parse_args([]).model is None  # the random model
    assert overhead.parse_args(["--model"]).model == DEFAULT_MODEL
    assert overhead.parse_args(["--model", "/x"]).model == "/x"
    assert overhead.parse_args(["--passes", "tree,likely"]).passes == ["tree", "likely"]
