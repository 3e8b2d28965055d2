# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The benchmark runs every method on the same prompts and checks them against plain."""

import argparse
import json
import time

from conftest import tiny_config, tiny_hf_tokenizer, tiny_model
from mlx_specstream.benchmarks.bench import run, write_report

from mlx_specstream.utils import load, save_model


def test_bench_methods_agree_with_plain_and_mlx_lm(tmp_path):
    save_model(tiny_model(0), tiny_config(), tmp_path / "m")
    tiny_hf_tokenizer().save_pretrained(tmp_path / "m")
    model, tokenizer = load(tmp_path / "m")
    tokenizer.eos_token_ids = []
    data = tmp_path / "data"
    data.mkdir()
    (data / "sql_test.jsonl").write_text(
        json.dumps({"prompt": "t5 t6 t7 t5 t6"}) + "\n"
    )
    args = argparse.Namespace(
        data=str(data),
        per_task=1,
        max_tokens=12,
        prune_threshold=0.05,
        medusa=None,
        methods=None,
        chat="4",
        repeats=2,
    )
    report = run(model, tokenizer, args)
    methods = report["methods"]
    assert {"mlx_lm", "ours_plain", "ss_best_first", "prompt_lookup"} <= set(methods)
    for name, m in methods.items():
        # 4 chat prompts + 1 sql, each run twice
        assert m["identical_to_plain"] == "10/10", name
    assert methods["ours_plain"]["tokens_per_pass"] == 1.0
    assert set(report["by_task"]) == {"chat", "sql", "all tasks"}  # chat apart
    assert report["by_task"]["all tasks"]["ours_plain"]["identical_to_plain"] == "2/2"
    write_report(report, tmp_path / "out", "header")
    md = (tmp_path / "out" / "bench.md").read_text()
    assert md.startswith("header")
    assert "Speed relative to mlx_lm by task:" in md
    assert "| sql | 1.00x |" in md  # mlx_lm's own column
    assert (tmp_path / "out" / "bench.png").stat().st_size > 0


def test_bench_time_limit_reports_the_prompts_done(tmp_path):
    save_model(tiny_model(0), tiny_config(), tmp_path / "m")
    tiny_hf_tokenizer().save_pretrained(tmp_path / "m")
    model, tokenizer = load(tmp_path / "m")
    args = argparse.Namespace(
        data=None,
        per_task=1,
        max_tokens=4,
        prune_threshold=0.05,
        medusa=None,
        methods=["mlx_lm", "ours_plain"],
        chat="4",
        repeats=1,
        deadline=time.perf_counter(),  # already past: the first prompt only
    )
    report = run(model, tokenizer, args)
    assert report["prompts"] == [1, 4]
    assert report["methods"]["ours_plain"]["identical_to_plain"] == "1/1"
    write_report(report, tmp_path / "out", "header")
    first = (tmp_path / "out" / "bench.md").read_text().splitlines()[0]
    assert first == "header; time limit: 1 of 4 prompts"
