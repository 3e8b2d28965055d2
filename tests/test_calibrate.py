# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Calibration replays greedy decoding; its tokens per pass must be the decoder's."""

import pytest
from conftest import emitted, tiny_hf_tokenizer, tiny_model, wrap

from mlx_specstream.calibrate import calibrate
from mlx_specstream.decoding.drafters import StreamDrafter
from mlx_specstream.decoding.ngrams import NgramStore
from mlx_specstream.decoding.replay import replay, stream_candidates
from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import stream_generate


@pytest.mark.parametrize("store", [False, True])
@pytest.mark.parametrize("budget", [1, 4, 12])
def test_replay_counts_the_decoders_passes(budget, store):
    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    # Strong random streams so that some drafts are accepted.
    model = tiny_model(
        3, StreamArgs(num_streams=3, num_stream_layers=3), stream_scale=0.2
    )
    prompt = [7, 3, 9, 12, 40, 41]
    if store:  # trees reranked by a table of the model's answers, history-dependent
        plain = list(stream_generate(model, tok, prompt, max_tokens=40))
        state_of(model).ngrams = NgramStore.from_sequences([[r.token for r in plain]])
    rs = list(
        stream_generate(
            model, tok, prompt, max_tokens=40, tree=TreeShape(budget=budget)
        )
    )
    out = [t for r in rs for t in emitted(r)]
    seq = prompt + out
    cands = stream_candidates(model, seq, budget)
    drafter = StreamDrafter(TreeShape(budget=budget), store=state_of(model).ngrams)
    passes, tokens, depths = replay(cands, seq, len(prompt), drafter, max_tokens=40)
    assert tokens == 40
    assert passes == rs[-1].forward_calls
    assert depths == [r.accepted for r in rs[1:] if not r.from_draft]  # one per pass


def test_calibrate_picks_the_best_measured_configuration():
    tok = wrap(tiny_hf_tokenizer())
    model = tiny_model(0)
    cal = calibrate(
        model, tok, prompts=["t1 t2 t3", "t9 t8"], budgets=(1, 4, 8), max_tokens=12
    )
    assert set(cal.all_costs) == {"tree", "accepted", "likely"}
    assert set(cal.all_tokens_per_pass) == {"streams", "streams+lookup"}
    for c in cal.all_costs.values():
        assert set(c) == {1, 4, 8} and c[1] == 1.0 and all(v > 0 for v in c.values())
    rates = {
        (T, sp, d): e[T] / c[T]
        for sp, c in cal.all_costs.items()
        for d, e in cal.all_tokens_per_pass.items()
        for T in (1, 4, 8)
    }
    assert cal.expected_speedup == max(rates.values())
    drafter = "streams+lookup" if cal.prompt_lookup else "streams"
    assert rates[(cal.budget, cal.stream_pass, drafter)] == max(rates.values())
    assert cal.costs == cal.all_costs[cal.stream_pass]


def test_outdated_or_corrupt_calibration_is_measured_again(tmp_path, monkeypatch):
    import json

    from mlx_specstream.loading import calibration as C

    monkeypatch.setattr(C, "cache_file", lambda path: tmp_path / "cal.json")
    cal = C.Calibration(4, "dev", {1: 1.0, 4: 1.5}, {1: 1.0, 4: 2.0}, 0.1, "accepted")
    C.save_calibration(tmp_path, cal)
    assert C.load_calibration(tmp_path) == cal
    d = json.loads((tmp_path / "cal.json").read_text())
    d["version"] = 1
    (tmp_path / "cal.json").write_text(json.dumps(d))
    assert C.load_calibration(tmp_path) is None
    (tmp_path / "cal.json").write_text("{not json")
    assert C.load_calibration(tmp_path) is None


def test_calibration_timed_on_a_busy_cpu_is_not_cached(tmp_path, monkeypatch):
    import os

    from mlx_specstream import calibrate as K
    from mlx_specstream.loading import calibration as C

    monkeypatch.setattr(C, "cache_file", lambda path: tmp_path / "cal.json")
    quiet = C.Calibration(8, "dev", {1: 1.0, 8: 1.5}, {1: 1.0, 8: 2.0}, 0.1, load=0.1)
    assert C.save_calibration(tmp_path, quiet)
    assert C.load_calibration(tmp_path) == quiet
    busy = C.Calibration(1, "dev", {1: 1.0}, {1: 1.0}, 0.2, load=C.BUSY_LOAD + 0.5)
    assert busy.busy and not C.save_calibration(tmp_path, busy)
    assert C.load_calibration(tmp_path) == quiet  # the quiet result stays
    assert C.save_calibration(tmp_path, busy, force=True)
    assert C.load_calibration(tmp_path) == busy

    # Other processes' load: the load average less this process's own CPU use.
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    wall, cpu = K._clock()
    since = (wall - 10.0, cpu - 1.0)  # this process: one core for a tenth of 10 s
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0, 0.0, 0.0))
    assert 1.9 < K.others_load(since) < 1.96  # (4 - 0.1) / 2
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert K.others_load(since) == 0.0


def test_replay_with_prompt_lookup_matches_the_decoder():
    from mlx_specstream.decoding.drafters import MixedDrafter, StreamDrafter

    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(
        4, StreamArgs(num_streams=3, num_stream_layers=3), stream_scale=0.2
    )
    prompt = [7, 3, 9, 12, 7, 3, 9, 12, 40]
    drafter = MixedDrafter(StreamDrafter(TreeShape(budget=6)))
    rs = list(stream_generate(model, tok, prompt, max_tokens=30, drafter=drafter))
    seq = prompt + [t for r in rs for t in emitted(r)]
    passes, _, depths = replay(
        stream_candidates(model, seq, 6), seq, len(prompt), drafter, max_tokens=30
    )
    assert passes == rs[-1].forward_calls
    assert depths == [r.accepted for r in rs[1:] if not r.from_draft]  # one per pass


def test_read_prompts_from_jsonl_and_text(tmp_path):
    import json

    from mlx_specstream.prompts import read_prompts

    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"prompt": "a"})
        + "\n\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "s"},
                    {"role": "user", "content": "b"},
                ]
            }
        )
        + "\n"
    )
    assert read_prompts(f) == ["a", "b"]
    t = tmp_path / "p.txt"
    t.write_text("first prompt\n\nsecond prompt\n")
    assert read_prompts(t) == ["first prompt", "second prompt"]
    f.write_text(json.dumps({"prompt": "a"}) + "\n" + json.dumps({"x": 1}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: expected"):
        read_prompts(f)
    t.write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(t)
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.txt")


def test_calibrated_default_falls_back_to_plain_where_trees_do_not_pay():
    """A calibrated tree whose tokens per pass stay below its measured cost decodes
    plainly after a few passes; output equals plain decoding either way."""
    from mlx_specstream.loading import calibration as C

    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(1)  # random streams: drafts are hardly ever accepted
    plain = [t for r in stream_generate(model, tok, [4, 5, 6], max_tokens=40,
                                        speculative=False) for t in emitted(r)]  # fmt: skip
    for cost, falls_back in ((3.0, True), (1.0, False)):
        costs = {1: 1.0, 8: cost}
        state_of(model).calibration = C.Calibration(8, "dev", costs, {1: 1.0, 8: 2.0}, 0.1,
                                          "likely", False, {"likely": costs})  # fmt: skip
        rs = list(stream_generate(model, tok, [4, 5, 6], max_tokens=40))
        assert [t for r in rs for t in emitted(r)] == plain
        late = [r.tree_size for r in rs[16:]]  # after the 8 passes it waits for
        assert (set(late) == {1}) == falls_back, late
        assert rs[-1].forward_calls <= 40
    state_of(model).calibration = None


def test_fallback_threshold_is_a_margin_below_the_calibrated_cost():
    """Only runs clearly below the step's cost fall back; explicit trees never do."""
    from mlx_specstream.decoding.defaults import FALLBACK_MARGIN, choose_speculation
    from mlx_specstream.decoding.tree import TreeShape
    from mlx_specstream.loading import calibration as C

    model = tiny_model(1)
    costs = {1: 1.0, 8: 1.6, 16: 2.0}
    state_of(model).calibration = C.Calibration(16, "dev", {1: 1.0, 16: 9.0}, {1: 1.0, 16: 2.5},
                                      0.1, "likely", True, {"likely": costs})  # fmt: skip
    assert 0 < FALLBACK_MARGIN < 1
    spec = choose_speculation(model)
    assert spec.fallback_cost == pytest.approx(FALLBACK_MARGIN * 2.0)  # its pass's
    assert choose_speculation(model, tree=TreeShape(budget=8)).fallback_cost == 0.0
    state_of(model).calibration = None


def test_calibrated_fallback_resumes_where_prompt_lookup_would_pay():
    """After the fallback, plain decoding watches prompt lookup; once the answer
    repeats itself, trees come back (and go again when they do not pay). Output
    equals plain decoding throughout."""
    from mlx_specstream.loading import calibration as C

    tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(3)  # its greedy answer settles into a 13-token cycle
    prompt = [4, 5, 6, 4, 5]
    plain = [t for r in stream_generate(model, tok, prompt, max_tokens=80,
                                        speculative=False) for t in emitted(r)]  # fmt: skip
    costs = {1: 1.0, 8: 50.0}  # no tree pays: every stretch falls back
    for lookup in (True, False):  # the watch is the run's prompt lookup
        state_of(model).calibration = C.Calibration(8, "dev", costs, {1: 1.0, 8: 2.0}, 0.1,
                                          "likely", lookup, {"likely": costs})  # fmt: skip
        rs = list(stream_generate(model, tok, prompt, max_tokens=80))
        assert [t for r in rs for t in emitted(r)] == plain
        # The first plain token after a tree pass; from there, only a resumed
        # tree accepts drafts.
        trees = [r.tree_size for r in rs]
        fell = next(i for i in range(1, len(rs)) if trees[i] == 1 < max(trees[:i]))
        later = [r.accepted for r in rs[fell:]]
        assert (max(later) > 0) == lookup, later
    state_of(model).calibration = None
