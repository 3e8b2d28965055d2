# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Generation from several threads at once: exact output, or a clean Python error,
never an abort or a hang (``mlx_specstream/device.py`` says how and why).

The abort this guards against came at process exit, after the threads had
finished: each round therefore runs in a fresh process whose main thread exits as
soon as its threads are joined, and the test checks how that process ended.
"""

import json
import os
import subprocess
import sys
import threading
from typing import Dict, List

import mlx.core as mx
import pytest
from conftest import emitted, tiny_config, tiny_hf_tokenizer, tiny_model, wrap

from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.generate import stream_generate
from mlx_specstream.models.cache import make_prompt_cache

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# One round: greedy single-threaded outputs first, then THREADS threads (half plain
# decoding, half with a draft tree) x GENS generations each on the same model; prints
# a JSON summary and exits straight after joining the threads.
ROUND = r"""
import json, sys, threading
sys.path[:0] = [sys.argv[1], sys.argv[2]]
from conftest import emitted, tiny_config, tiny_hf_tokenizer, tiny_model, wrap
from mlx_specstream.generate import stream_generate
from mlx_specstream.decoding.tree import TreeShape

threads, gens = int(sys.argv[3]), int(sys.argv[4])
model, tokenizer = tiny_model(), wrap(tiny_hf_tokenizer())
modes = [dict(speculative=False), dict(tree=TreeShape(budget=8))]
jobs = [([5, 17, 33, 2, 61, 8, 40 + i], modes[i % 2]) for i in range(threads)]

def run(prompt, kw):
    rs = stream_generate(model, tokenizer, prompt, max_tokens=16, **kw)
    return [t for r in rs for t in emitted(r)]

truth = [run(p, kw) for p, kw in jobs]
wrong, errors = [], []

together = threading.Barrier(threads)

def work(i):
    try:
        for g in range(gens):
            if run(*jobs[i]) != truth[i]:
                wrong.append([i, g])
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:  # all end at once, just before the process does: the abort's moment
        together.wait(120)

ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({"wrong": wrong, "errors": errors}), flush=True)
"""

ROUNDS, AT_ONCE, THREADS, GENS = 8, 2, 4, 2  # two rounds at a time: two cores


@pytest.mark.parametrize("batch", range(ROUNDS // AT_ONCE))
def test_threads_in_fresh_processes_never_abort(batch):
    args = [sys.executable, "-c", ROUND, ROOT, TESTS, str(THREADS), str(GENS)]
    procs = [
        subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(AT_ONCE)
    ]
    try:
        ends = [p.communicate(timeout=180) for p in procs]
    except subprocess.TimeoutExpired:  # a hang (a lock never released)
        for p in procs:
            p.kill()
            p.communicate()
        pytest.fail(f"a round of batch {batch} hung")
    for p, (out, err) in zip(procs, ends):
        # A negative code is a signal: -6 is SIGABRT ("terminate called without an
        # active exception").
        assert p.returncode == 0, f"exit {p.returncode}; stderr:\n{err[-3000:]}"
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["errors"] == [], summary["errors"]
        assert summary["wrong"] == [], "outputs differ from single-threaded decoding"


MODES = {"plain": dict(speculative=False), "tree": dict(tree=TreeShape(budget=8))}
PROMPTS = [[5, 17, 33, 2, 61, 8, 40], [9, 3, 77, 12], [44, 1, 2, 3, 4, 5, 6, 7, 8]]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def tok():
    return wrap(tiny_hf_tokenizer())


def tokens_of(responses) -> List[int]:
    return [t for r in responses for t in emitted(r)]


def in_threads(fns) -> List:
    """Run the callables at once, one thread each; their results (or raise)."""
    out: Dict[int, object] = {}

    def work(i):
        try:
            out[i] = fns[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out[i] = e

    ts = [threading.Thread(target=work, args=(i,)) for i in range(len(fns))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert not any(t.is_alive() for t in ts), "a generation hung"
    for v in out.values():
        if isinstance(v, BaseException):
            raise v
    return [out[i] for i in range(len(fns))]


@pytest.mark.parametrize("mode", MODES)
def test_threads_with_different_prompts_get_their_own_output(model, tok, mode):
    kw = MODES[mode]
    truth = [tokens_of(stream_generate(model, tok, p, 24, **kw)) for p in PROMPTS]
    got = in_threads(
        [
            lambda p=p: tokens_of(stream_generate(model, tok, p, 24, **kw))
            for p in PROMPTS
        ]
    )
    assert got == truth


def test_two_models_in_threads(tok):
    models = [tiny_model(seed=1), tiny_model(seed=2, num_hidden_layers=3)]
    kw = MODES["tree"]
    truth = [tokens_of(stream_generate(m, tok, PROMPTS[0], 24, **kw)) for m in models]
    got = in_threads(
        [
            lambda m=m: tokens_of(stream_generate(m, tok, PROMPTS[0], 24, **kw))
            for m in models
        ]
    )
    assert got == truth


@pytest.mark.parametrize("mode", MODES)
def test_a_generator_advanced_from_thread_to_thread(model, tok, mode):
    """As a thread pool serves a streaming response: each token on another thread;
    the responses' logprobs read on yet another."""
    kw = MODES[mode]
    truth = list(stream_generate(model, tok, PROMPTS[0], 12, **kw))
    gen = stream_generate(model, tok, PROMPTS[0], 12, **kw)
    got = []
    while True:
        (r,) = in_threads([lambda: next(gen, None)])
        if r is None:
            break
        got.append(r)
    assert tokens_of(got) == tokens_of(truth)
    (rows,) = in_threads([lambda: [r.logprobs.tolist() for r in got]])
    for row, r in zip(rows, truth):
        assert mx.allclose(mx.array(row), r.logprobs).item()


def test_a_held_generator_blocks_no_other_thread(model, tok):
    kw = MODES["tree"]
    truth = tokens_of(stream_generate(model, tok, PROMPTS[0], 16, **kw))
    held = stream_generate(model, tok, PROMPTS[1], 16, **kw)
    first = next(held)  # then left alone while another thread generates
    (other,) = in_threads(
        [lambda: tokens_of(stream_generate(model, tok, PROMPTS[0], 16, **kw))]
    )
    assert other == truth
    rest = tokens_of([first, *held])
    assert rest == tokens_of(stream_generate(model, tok, PROMPTS[1], 16, **kw))


def test_a_conversation_continued_on_another_thread(model, tok):
    kw = MODES["tree"]
    cache = make_prompt_cache(model)
    turn1 = tokens_of(
        stream_generate(model, tok, PROMPTS[0], 10, prompt_cache=cache, **kw)
    )
    turn2 = tokens_of(
        stream_generate(model, tok, PROMPTS[1], 10, prompt_cache=cache, **kw)
    )
    cache = make_prompt_cache(model)
    got = []
    for p in PROMPTS[:2]:
        got += in_threads(
            [
                lambda p=p: tokens_of(
                    stream_generate(model, tok, p, 10, prompt_cache=cache, **kw)
                )
            ]
        )
    assert got == [turn1, turn2]


def test_arrays_only_another_thread_can_evaluate_raise_a_clear_error(tok):
    model = tiny_model()
    weight = model.model.embed_tokens.weight
    model.model.embed_tokens.weight = weight * 1  # lazy, on this thread's stream
    with pytest.raises(RuntimeError, match="made on another thread"):
        in_threads([lambda: list(stream_generate(model, tok, PROMPTS[0], 4))])
    mx.eval(model.parameters())  # this thread can; then any thread can
    (got,) = in_threads([lambda: tokens_of(stream_generate(model, tok, PROMPTS[0], 4))])
    assert got == tokens_of(stream_generate(model, tok, PROMPTS[0], 4))


def test_a_model_loaded_lazily_generates_on_another_thread(tmp_path, tok):
    """``load`` (lazy by default) on this thread, decoding on a background thread:
    the app's usual pattern; the weights are made where any thread may read them."""
    from mlx_specstream.utils import load, save_model

    save_model(tiny_model(), tiny_config(), tmp_path / "m")
    tiny_hf_tokenizer().save_pretrained(tmp_path / "m")
    model, tokenizer = load(tmp_path / "m")  # lazy: nothing evaluated yet
    for kw in (dict(speculative=False), dict(tree=TreeShape(budget=8))):
        (got,) = in_threads(
            [lambda: tokens_of(stream_generate(model, tokenizer, PROMPTS[0], 6, **kw))]
        )
        assert got == tokens_of(stream_generate(model, tokenizer, PROMPTS[0], 6, **kw))
