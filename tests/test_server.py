# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The OpenAI-compatible server: shapes, equality with the Python API, the prompt
cache, stop strings, the queue, disconnects, safety and every bad request.

A tiny random model is saved to a temporary directory and loaded as a user's would
be; the app is driven in process (FastAPI's TestClient, or raw ASGI calls where a
client must vanish mid-answer); one test starts the real server on a free loopback
port and talks to it with the official ``openai`` client.
"""

import asyncio
import contextlib
import json
import os
import re
import socket
import threading
import time

import mlx.core as mx
import pytest
from conftest import tiny_config, tiny_hf_tokenizer, tiny_model
from fastapi.testclient import TestClient
from mlx_lm.sample_utils import make_logits_processors

from mlx_specstream import cli
from mlx_specstream.decoding.state import state_of
from mlx_specstream.decoding.tree import TreeShape
from mlx_specstream.generate import generate, stream_generate
from mlx_specstream.models.cache import make_prompt_cache
from mlx_specstream.prompts import apply_chat_template
from mlx_specstream.server import Job, QueueFull, Worker, create_app
from mlx_specstream.serving.prompt_store import PromptStore, StopMatcher, common_prefix
from mlx_specstream.utils import load, save_model

# Role words of the tiny tokenizer's chat template (its vocabulary is t1..t95).
TEMPLATE = (
    "{% for m in messages %}"
    "{{ {'system': 't3', 'user': 't1', 'assistant': 't2'}[m['role']] }} {{ m['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}t2 {% endif %}"
)
# Speculation on (a tree of streams plus prompt lookup), so responses span passes.
DECODING = dict(
    max_tokens=24, tree=TreeShape(budget=8), stream_pass="tree", prompt_lookup=True
)
SPEC = {k: v for k, v in DECODING.items() if k != "max_tokens"}
PROMPT = "t5 t17 t33 t2 t61 t8 t40"
CHAT = [{"role": "user", "content": "t5 t17 t33"}]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = tmp_path_factory.mktemp("server") / "tiny-model"
    save_model(tiny_model(0), tiny_config(), path)
    hf = tiny_hf_tokenizer()
    hf.chat_template = TEMPLATE
    hf.save_pretrained(path)
    return load(path)


@pytest.fixture
def make_client(loaded):
    apps = []

    def make(**kw):
        kw.setdefault("decoding", DECODING)
        app = create_app(*loaded, **kw)
        apps.append(app)
        return TestClient(app)

    yield make
    for app in apps:
        app.state.worker.stop()


@pytest.fixture
def client(make_client):
    return make_client()


def python_api(loaded, prompt, max_tokens=24, **kw):
    model, tokenizer = loaded
    return generate(model, tokenizer, prompt, max_tokens=max_tokens, **{**SPEC, **kw})


def chat_prompt(loaded, messages):
    return apply_chat_template(loaded[1], messages)


def sse_events(text: str) -> list:
    """The ``data:`` payloads of an SSE body, in order (JSON decoded but [DONE])."""
    out = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[len("data: ") :]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def error_of(r, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return err


# ------------------------------------------------------------------ shapes, equality


def test_models_and_health(client, loaded):
    r = client.get("/v1/models")
    assert r.status_code == 200
    (card,) = r.json()["data"]
    assert card["id"] == "tiny-model" and card["object"] == "model"
    assert card["context_length"] == tiny_config()["max_position_embeddings"]
    assert client.get("/v1/models/tiny-model").json()["id"] == "tiny-model"
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["queue"]["waiting"] == 0


def test_completion_equals_python_api(client, loaded):
    r = client.post(
        "/v1/completions",
        json={"model": "tiny-model", "prompt": PROMPT, "max_tokens": 24},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    (choice,) = body["choices"]
    assert choice["text"] == python_api(loaded, PROMPT)
    assert choice["finish_reason"] == "length" and choice["index"] == 0
    usage = body["usage"]
    n_prompt = len(loaded[1].encode(PROMPT))
    assert usage["prompt_tokens"] == n_prompt
    assert usage["completion_tokens"] == 24
    assert usage["total_tokens"] == n_prompt + 24
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}
    ours = usage["specstream"]
    assert 1 <= ours["forward_passes"] < 24  # speculation: fewer passes than tokens
    assert ours["draft_tokens_accepted"] >= 24 - ours["forward_passes"]
    assert ours["tokens_per_pass"] == pytest.approx(
        24 / ours["forward_passes"], abs=1e-3
    )


def test_completion_with_token_ids_equals_python_api(client, loaded):
    ids = [5, 17, 33, 2, 61]
    r = client.post("/v1/completions", json={"prompt": ids, "max_tokens": 10})
    assert r.json()["choices"][0]["text"] == python_api(loaded, ids, 10)


def test_chat_equals_python_api(client, loaded):
    messages = [{"role": "system", "content": "t9"}, *CHAT]
    r = client.post(
        "/v1/chat/completions", json={"messages": messages, "max_completion_tokens": 16}
    )
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    msg = body["choices"][0]["message"]
    assert msg == {
        "role": "assistant",
        "content": python_api(loaded, chat_prompt(loaded, messages), 16),
    }
    assert body["usage"]["completion_tokens"] == 16
    # Content as a list of text parts, and the developer role, mean the same.
    parts = [
        {"role": "developer", "content": [{"type": "text", "text": "t9"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "t5 "},
                {"type": "text", "text": "t17 t33"},
            ],
        },
    ]
    r = client.post("/v1/chat/completions", json={"messages": parts, "max_tokens": 16})
    assert r.json()["choices"][0]["message"]["content"] == msg["content"]


def test_chat_stream_sse_with_usage(client, loaded):
    want = python_api(loaded, chat_prompt(loaded, CHAT), 20)
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": CHAT,
            "max_tokens": 20,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(
        c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]
    )
    assert text == want
    assert len(chunks) > 5  # streamed piece by piece
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finish] == ["length"]
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 20
    assert "cached_tokens" in last["usage"]["prompt_tokens_details"]
    assert all(c["usage"] is None for c in chunks[:-1])


def test_completion_stream_without_usage(client, loaded):
    r = client.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": 12, "stream": True}
    )
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == python_api(
        loaded, PROMPT, 12
    )
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_seeded_sampling_equals_python_api(client, loaded):
    req = {
        "prompt": PROMPT,
        "max_tokens": 16,
        "temperature": 0.9,
        "top_p": 0.95,
        "top_k": 20,
        "seed": 7,
    }
    a = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    b = client.post("/v1/completions", json=req).json()["choices"][0]["text"]
    mx.random.seed(7)
    want = python_api(loaded, PROMPT, 16, temp=0.9, top_p=0.95, top_k=20)
    assert a == b == want
    other = client.post("/v1/completions", json={**req, "seed": 8}).json()["choices"][
        0
    ]["text"]
    assert other != want  # the seed matters (random model, 16 sampled tokens)


def test_repetition_penalty_equals_python_api(client, loaded):
    r = client.post(
        "/v1/completions",
        json={"prompt": PROMPT, "max_tokens": 24, "repetition_penalty": 1.5},
    )
    want = python_api(
        loaded,
        PROMPT,
        24,
        logits_processors=make_logits_processors(repetition_penalty=1.5),
    )
    assert r.json()["choices"][0]["text"] == want
    assert want != python_api(loaded, PROMPT, 24)


def test_max_tokens_defaults_to_what_the_context_leaves(make_client, loaded):
    client = make_client(decoding={**DECODING, "max_tokens": 1000})
    ctx = tiny_config()["max_position_embeddings"]
    ids = [5 + i % 80 for i in range(ctx - 6)]
    body = client.post("/v1/completions", json={"prompt": ids}).json()
    assert body["usage"]["completion_tokens"] == 6
    assert body["choices"][0]["finish_reason"] == "length"


# ----------------------------------------------------------------------- stop strings


def test_stop_matcher_holds_back_possible_starts():
    m = StopMatcher(["t7 t4", "XYZ"])
    assert m.feed("t1 t") == ("t1 ", False)  # "t" may begin "t7 t4"
    assert m.feed("7") == ("", False)
    assert m.feed(" t5") == ("t7 t5", False)
    assert m.feed(" t7 ") == (" ", False)
    assert m.feed("t4 t9") == ("", True)  # cut before the stop string, never emitted
    assert StopMatcher(["ab"]).feed("xxabyyab") == ("xx", True)
    m = StopMatcher(["abc"])
    assert m.feed("zab") == ("z", False)
    assert m.flush() == "ab"  # generation ended otherwise: nothing is lost
    assert StopMatcher().feed("abc") == ("abc", False)
    # The earliest of several stop strings wins.
    assert StopMatcher(["c", "ab"]).feed("xabc") == ("x", True)


def _full(client, max_tokens=24):
    return client.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": max_tokens}
    ).json()["choices"][0]["text"]


def test_stop_string_across_tokens_is_cut_exactly(client):
    full = _full(client)
    words = full.split(" ")
    # A stop string that starts inside one token and ends inside the next.
    stop = words[4][1:] + " " + words[5][:2]
    cut = full[: full.index(stop)]
    for stream in (False, True):
        r = client.post(
            "/v1/completions",
            json={
                "prompt": PROMPT,
                "max_tokens": 24,
                "stop": [stop, "never-there"],
                "stream": stream,
            },
        )
        if stream:
            chunks = sse_events(r.text)[:-1]
            pieces = [c["choices"][0]["text"] for c in chunks]
            text, finish = "".join(pieces), chunks[-1]["choices"][0]["finish_reason"]
            assert all(stop not in p for p in pieces)
        else:
            choice = r.json()["choices"][0]
            text, finish = choice["text"], choice["finish_reason"]
        assert text == cut and stop not in text
        assert finish == "stop"


def test_stop_string_inside_one_token_and_usage(client, loaded):
    full = _full(client)
    word = full.split(" ")[3]
    stop = word[1:]  # the digits of the fourth word: inside one token
    body = client.post(
        "/v1/completions", json={"prompt": PROMPT, "max_tokens": 24, "stop": stop}
    ).json()
    assert body["choices"][0]["text"] == full[: full.index(stop)]
    assert body["choices"][0]["finish_reason"] == "stop"
    # Generation stopped where the stop string completed, not at max_tokens.
    assert body["usage"]["completion_tokens"] < 24
    # Chat too.
    full_chat = client.post(
        "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 24}
    ).json()
    content = full_chat["choices"][0]["message"]["content"]
    stop = content.split(" ")[2]
    r = client.post(
        "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 24, "stop": stop}
    )
    assert (
        r.json()["choices"][0]["message"]["content"] == content[: content.index(stop)]
    )


# ------------------------------------------------------------------------ prompt cache


def test_prompt_cache_hit_equals_miss(make_client, loaded):
    cached, fresh = make_client(), make_client(prompt_cache_entries=0)
    first = cached.post(
        "/v1/chat/completions", json={"messages": CHAT, "max_tokens": 16}
    ).json()
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    answer = first["choices"][0]["message"]["content"]
    turn2 = [
        *CHAT,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": "t40 t41 t7"},
    ]
    hit = cached.post(
        "/v1/chat/completions", json={"messages": turn2, "max_tokens": 16}
    ).json()
    miss = fresh.post(
        "/v1/chat/completions", json={"messages": turn2, "max_tokens": 16}
    ).json()
    # The whole first turn, answer included, was reused.
    first_tokens = first["usage"]["prompt_tokens"] + first["usage"]["completion_tokens"]
    assert hit["usage"]["prompt_tokens_details"]["cached_tokens"] == first_tokens
    assert miss["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    want = python_api(loaded, chat_prompt(loaded, turn2), 16)
    assert (
        hit["choices"][0]["message"]["content"]
        == miss["choices"][0]["message"]["content"]
        == want
    )
    assert hit["usage"]["prompt_tokens"] == miss["usage"]["prompt_tokens"]


def test_prompt_cache_with_penalty_and_stop_equals_miss(make_client, loaded):
    """A stop string ends the answer mid-pass; the cache keeps only what was taken."""
    cached, fresh = make_client(), make_client(prompt_cache_entries=0)
    full = _full(cached)
    stop = full.split(" ")[6]
    req = {"prompt": PROMPT, "max_tokens": 24, "stop": stop, "repetition_penalty": 1.3}
    a = cached.post("/v1/completions", json=req).json()["choices"][0]["text"]
    prompt2 = PROMPT + " " + a + " t12 t13"
    req2 = {"prompt": prompt2, "max_tokens": 24, "repetition_penalty": 1.3}
    hit, miss = (
        cached.post("/v1/completions", json=req2).json(),
        fresh.post("/v1/completions", json=req2).json(),
    )
    assert hit["usage"]["prompt_tokens_details"]["cached_tokens"] > len(PROMPT.split())
    assert hit["choices"][0]["text"] == miss["choices"][0]["text"]
    procs = make_logits_processors(repetition_penalty=1.3)
    assert hit["choices"][0]["text"] == python_api(
        loaded, prompt2, 24, logits_processors=procs
    )


def test_same_prompt_twice_reuses_all_but_one_token(client, loaded):
    a = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 8}).json()
    b = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 8}).json()
    assert (
        b["usage"]["prompt_tokens_details"]["cached_tokens"]
        == b["usage"]["prompt_tokens"] - 1
    )
    assert a["choices"] == b["choices"]


def test_prompt_store_lru_bounds_and_longest_prefix(loaded):
    model, tokenizer = loaded

    def cache_for(tokens):
        c = make_prompt_cache(model)
        for _ in stream_generate(model, tokenizer, tokens, 1, prompt_cache=c):
            pass
        return c

    a, b = cache_for([5, 6, 7, 8]), cache_for([5, 6, 9])
    store = PromptStore(max_entries=2)
    store.put(a)
    store.put(b)
    assert len(store) == 2
    got, n = store.take([5, 6, 7, 8, 10, 11], limit=5)
    assert n >= 4 and got.tokens == a.tokens[:n]  # the longest shared prefix
    got, n = store.take(a.tokens + [10], limit=99)  # a's whole conversation
    assert got is a and n == len(a.tokens) and len(store) == 1  # taken, not copied
    store.put(a)
    # A shared prefix only (limit caps reuse): a copy of it, and b stays.
    b_tokens = list(b.tokens)
    got, n = store.take([5, 6, 9, 1], limit=1)
    assert got is not b and n == 1 and got.tokens == [5] and got[0].offset == 1
    assert b.tokens == b_tokens and len(store) == 2
    more = list(stream_generate(model, tokenizer, [6, 9], 3, prompt_cache=got))
    assert [r.token for r in more] == [
        r.token for r in stream_generate(model, tokenizer, [5, 6, 9], 3)
    ]
    assert b.tokens == b_tokens and b[0].offset == len(b_tokens) - b.pending
    assert store.take([5], limit=0) == (None, 0)
    store.put(a)
    store.put(cache_for([40, 41]))  # a third entry evicts the oldest (b)
    assert len(store) == 2
    got, n = store.take([5, 6, 9], 99)  # b went; a shares two tokens
    assert got is not a and n == 2
    tiny = PromptStore(max_entries=8, max_bytes=1)  # nothing fits in one byte
    tiny.put(cache_for([5, 6]))
    assert len(tiny) == 0
    assert PromptStore(max_entries=0).take([5, 6], 1) == (None, 0)
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2 and common_prefix([], [1]) == 0


# ------------------------------------------------------------------------- safety


def test_api_key_required_but_on_health(make_client):
    client = make_client(api_key="s3cret")
    for method, path, body in [
        ("get", "/v1/models", None),
        ("post", "/v1/completions", {"prompt": PROMPT, "max_tokens": 2}),
        ("post", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 2}),
    ]:
        call = getattr(client, method)
        kw = {"json": body} if body else {}
        err = error_of(call(path, **kw), 401)
        assert err["code"] == "invalid_api_key"
        error_of(call(path, headers={"Authorization": "Bearer wrong"}, **kw), 401)
        error_of(call(path, headers={"Authorization": "s3cret"}, **kw), 401)
        assert (
            call(path, headers={"Authorization": "Bearer s3cret"}, **kw).status_code
            == 200
        )
    assert client.get("/health").status_code == 200
    # The chat page is static (it asks for the key); it holds no data.
    assert client.get("/").status_code == 200


def test_model_field_never_loads_anything(client, loaded):
    for name in ("gpt-4o", "/etc/passwd", "mlx-community/Llama-3.2-1B-Instruct-4bit"):
        err = error_of(
            client.post("/v1/completions", json={"model": name, "prompt": PROMPT}), 404
        )
        assert err["code"] == "model_not_found" and err["param"] == "model"
        error_of(client.get(f"/v1/models/{name}"), 404)
    # The served model answers to its id and its path.
    for name in ("tiny-model", str(state_of(loaded[0]).path)):
        r = client.post(
            "/v1/completions", json={"model": name, "prompt": PROMPT, "max_tokens": 2}
        )
        assert r.status_code == 200


def test_body_over_limit_gets_413(make_client):
    client = make_client(max_body_bytes=2000)
    err = error_of(client.post("/v1/completions", json={"prompt": "t5 " * 1000}), 413)
    assert err["code"] == "request_too_large"
    assert (
        client.post(
            "/v1/completions", json={"prompt": PROMPT, "max_tokens": 2}
        ).status_code
        == 200
    )


def test_cli_server_command_and_default_bind(capsys):
    cli.main(["--help"])
    assert "server" in capsys.readouterr().out
    from mlx_specstream import server

    with pytest.raises(SystemExit):
        server.main(["--help"])
    out = capsys.readouterr().out
    assert "--api-key" in out and "127.0.0.1" in out


def test_chat_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert (
        "/v1/chat/completions" in page
        and "include_usage" in page
        and "tokens_per_pass" in page
    )
    assert (
        "http://" not in page and "https://" not in page
    )  # nothing fetched from elsewhere


# -------------------------------------------------------------------- concurrency


def _blocking(release: threading.Event):
    def stream_fn(*args, **kw):
        release.wait(30)
        yield from stream_generate(*args, **kw)

    return stream_fn


def _wait_for(cond, timeout=30.0):
    end = time.time() + timeout
    while not cond():
        assert time.time() < end, "timed out"
        time.sleep(0.01)


def test_queue_full_gets_503_with_retry_after(make_client):
    release = threading.Event()
    client = make_client(max_queue=1, stream_fn=_blocking(release))
    worker = client.app.state.worker
    results = {}

    def post(name):
        results[name] = client.post(
            "/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}
        )

    running = threading.Thread(target=post, args=("running",))
    running.start()
    _wait_for(lambda: worker.current is not None)
    waiting = threading.Thread(target=post, args=("waiting",))
    waiting.start()
    _wait_for(lambda: worker.waiting == 1)
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4})
    err = error_of(r, 503)
    assert err["code"] == "queue_full" and err["type"] == "server_error"
    assert int(r.headers["Retry-After"]) >= 1
    release.set()
    running.join(30)
    waiting.join(30)
    assert results["running"].status_code == results["waiting"].status_code == 200
    assert results["running"].json()["choices"] == results["waiting"].json()["choices"]


def test_worker_runs_jobs_in_order_and_drops_cancelled():
    order = []
    gate = threading.Event()

    def run(job):
        gate.wait(10)
        order.append(job.req)

    worker = Worker(run, max_queue=3)
    jobs = [Job(i) for i in range(4)]
    worker.submit(jobs[0])
    _wait_for(lambda: worker.current is jobs[0])
    for j in jobs[1:]:
        worker.submit(j)
    with pytest.raises(QueueFull):
        worker.submit(Job(99))
    worker.cancel(jobs[2])  # a waiting job leaves the queue at once
    assert worker.waiting == 2
    gate.set()
    _wait_for(lambda: jobs[3].finished.is_set())
    assert order == [0, 1, 3]
    worker.stop()


def _counting(counter: dict, delay: float = 0.005):
    def stream_fn(*args, **kw):
        for r in stream_generate(*args, **kw):
            counter["n"] += 1
            time.sleep(delay)
            yield r

    return stream_fn


async def _call_and_leave(app, path: str, body: dict, until) -> list:
    """Call the app as a server would; the client hangs up once ``until(sent)``."""
    gone, read, sent = asyncio.Event(), [False], []

    async def receive():
        if not read[0]:
            read[0] = True
            return {
                "type": "http.request",
                "body": json.dumps(body).encode(),
                "more_body": False,
            }
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
        "headers": [(b"content-type", b"application/json")],
    }
    task = asyncio.ensure_future(app(scope, receive, send))
    while not until(sent):
        assert not task.done(), sent
        await asyncio.sleep(0.002)
    gone.set()
    await asyncio.wait_for(task, 30)
    return sent


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_stops_generation_and_frees_the_worker(make_client, stream):
    counter = {"n": 0}
    client = make_client(stream_fn=_counting(counter))
    worker = client.app.state.worker
    max_tokens = 400
    body = {"prompt": PROMPT, "max_tokens": max_tokens, "stream": stream}
    if stream:  # hang up once the first tokens have arrived

        def until(sent):
            return sum(b'"text"' in m.get("body", b"") for m in sent) >= 3

    else:  # the answer comes at the end: hang up while it is being generated

        def until(sent):
            return counter["n"] >= 3

    sent = asyncio.run(_call_and_leave(client.app, "/v1/completions", body, until))
    at_leave = counter["n"]
    _wait_for(lambda: worker.current is None and worker.waiting == 0)
    assert counter["n"] <= at_leave + 3 < max_tokens  # stopped at the next token
    assert not any(b"[DONE]" in m.get("body", b"") for m in sent)
    # The worker is free and the server answers the next request.
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_a_failing_request_does_not_take_down_the_others(make_client, loaded):
    def flaky(model, tokenizer, prompt, *args, **kw):
        if 77 in list(prompt):
            raise RuntimeError("boom")
        return stream_generate(model, tokenizer, prompt, *args, **kw)

    client = make_client(stream_fn=flaky)
    err = error_of(
        client.post("/v1/completions", json={"prompt": [5, 77, 6], "max_tokens": 4}),
        500,
    )
    assert "boom" in err["message"] and err["type"] == "server_error"
    r = client.post(
        "/v1/completions", json={"prompt": [5, 77, 6], "max_tokens": 4, "stream": True}
    )
    events = sse_events(r.text)
    assert "boom" in events[-2]["error"]["message"] and events[-1] == "[DONE]"
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 4})
    assert r.status_code == 200
    assert client.get("/health").json()["failed"] == 2


# ------------------------------------------------------------------- bad requests

C, T = "/v1/chat/completions", "/v1/completions"
NAN = '{"prompt": "t5", "temperature": NaN}'
BAD = {
    "malformed_json": (T, '{"prompt": "t5",', 400, None, "invalid_json"),
    "body_not_object": (T, "[1, 2]", 400, None, "invalid_type"),
    "missing_prompt": (
        T,
        {"max_tokens": 4},
        400,
        "prompt",
        "missing_required_parameter",
    ),
    "prompt_wrong_type": (T, {"prompt": 5}, 400, "prompt", "invalid_type"),
    "prompt_token_outside_vocab": (
        T,
        {"prompt": [5, 96]},
        400,
        "prompt",
        "invalid_value",
    ),
    "several_prompts": (
        T,
        {"prompt": ["t5", "t6"]},
        400,
        "prompt",
        "unsupported_value",
    ),
    "empty_prompt": (T, {"prompt": ""}, 400, "prompt", "invalid_value"),
    "missing_messages": (
        C,
        {"max_tokens": 4},
        400,
        "messages",
        "missing_required_parameter",
    ),
    "messages_not_list": (C, {"messages": "hi"}, 400, "messages", "invalid_type"),
    "empty_messages": (C, {"messages": []}, 400, "messages", "invalid_value"),
    "message_not_object": (C, {"messages": ["hi"]}, 400, "messages[0]", "invalid_type"),
    "unknown_role": (
        C,
        {"messages": [{"role": "wizard", "content": "t5"}]},
        400,
        "messages[0].role",
        "invalid_value",
    ),
    "missing_role": (
        C,
        {"messages": [{"content": "t5"}]},
        400,
        "messages[0].role",
        "invalid_type",
    ),
    "missing_content": (
        C,
        {"messages": [{"role": "user"}]},
        400,
        "messages[0].content",
        "missing_required_parameter",
    ),
    "content_wrong_type": (
        C,
        {"messages": [{"role": "user", "content": 5}]},
        400,
        "messages[0].content",
        "invalid_type",
    ),
    "image_content": (
        C,
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages[0].content",
        "invalid_value",
    ),
    "negative_temperature": (
        T,
        {"prompt": "t5", "temperature": -0.5},
        400,
        "temperature",
        "invalid_value",
    ),
    "nan_temperature": (T, NAN, 400, "temperature", "invalid_value"),
    "temperature_wrong_type": (
        T,
        {"prompt": "t5", "temperature": "hot"},
        400,
        "temperature",
        "invalid_type",
    ),
    "top_p_zero": (C, {"messages": CHAT, "top_p": 0}, 400, "top_p", "invalid_value"),
    "top_p_above_one": (
        T,
        {"prompt": "t5", "top_p": 1.5},
        400,
        "top_p",
        "invalid_value",
    ),
    "min_p_above_one": (T, {"prompt": "t5", "min_p": 2}, 400, "min_p", "invalid_value"),
    "top_k_negative": (T, {"prompt": "t5", "top_k": -3}, 400, "top_k", "invalid_value"),
    "zero_max_tokens": (
        T,
        {"prompt": "t5", "max_tokens": 0},
        400,
        "max_tokens",
        "invalid_value",
    ),
    "negative_max_tokens": (
        C,
        {"messages": CHAT, "max_tokens": -5},
        400,
        "max_tokens",
        "invalid_value",
    ),
    "fractional_max_tokens": (
        T,
        {"prompt": "t5", "max_tokens": 1.5},
        400,
        "max_tokens",
        "invalid_type",
    ),
    "max_tokens_wrong_type": (
        T,
        {"prompt": "t5", "max_tokens": "10"},
        400,
        "max_tokens",
        "invalid_type",
    ),
    "max_tokens_beyond_context": (
        T,
        {"prompt": "t5", "max_tokens": 100000},
        400,
        "max_tokens",
        "context_length_exceeded",
    ),
    "max_completion_tokens_beyond_context": (
        C,
        {"messages": CHAT, "max_completion_tokens": 600},
        400,
        "max_completion_tokens",
        "context_length_exceeded",
    ),
    "prompt_past_context": (
        T,
        {"prompt": [5] * 600},
        400,
        "prompt",
        "context_length_exceeded",
    ),
    "messages_past_context": (
        C,
        {"messages": [{"role": "user", "content": "t5 " * 600}]},
        400,
        "messages",
        "context_length_exceeded",
    ),
    "n_above_one": (C, {"messages": CHAT, "n": 2}, 400, "n", "unsupported_value"),
    "stream_wrong_type": (
        T,
        {"prompt": "t5", "stream": "yes"},
        400,
        "stream",
        "invalid_type",
    ),
    "stream_options_wrong_type": (
        T,
        {"prompt": "t5", "stream": True, "stream_options": 1},
        400,
        "stream_options",
        "invalid_type",
    ),
    "stop_wrong_type": (T, {"prompt": "t5", "stop": 5}, 400, "stop", "invalid_type"),
    "too_many_stops": (
        T,
        {"prompt": "t5", "stop": list("abcde")},
        400,
        "stop",
        "invalid_value",
    ),
    "empty_stop": (T, {"prompt": "t5", "stop": [""]}, 400, "stop", "invalid_value"),
    "seed_wrong_type": (T, {"prompt": "t5", "seed": "x"}, 400, "seed", "invalid_type"),
    "zero_repetition_penalty": (
        T,
        {"prompt": "t5", "repetition_penalty": 0},
        400,
        "repetition_penalty",
        "invalid_value",
    ),
    "presence_penalty_out_of_range": (
        T,
        {"prompt": "t5", "presence_penalty": 3},
        400,
        "presence_penalty",
        "invalid_value",
    ),
    "model_wrong_type": (T, {"prompt": "t5", "model": 3}, 400, "model", "invalid_type"),
    "tools_unsupported": (
        C,
        {"messages": CHAT, "tools": [{"type": "function"}]},
        400,
        "tools",
        "unsupported_parameter",
    ),
    "logprobs_unsupported": (
        C,
        {"messages": CHAT, "logprobs": True},
        400,
        "logprobs",
        "unsupported_parameter",
    ),
    "json_mode_unsupported": (
        C,
        {"messages": CHAT, "response_format": {"type": "json_object"}},
        400,
        "response_format",
        "unsupported_value",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request(client, case):
    path, body, status, param, code = BAD[case]
    kw = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, str)
        else {"json": body}
    )
    err = error_of(client.post(path, **kw), status)
    assert err["type"] == "invalid_request_error"
    assert (err["param"], err["code"]) == (param, code)
    # ... and the server keeps serving.
    assert client.post(T, json={"prompt": PROMPT, "max_tokens": 2}).status_code == 200


@pytest.mark.parametrize(
    "method,path,status,code",
    [
        ("get", "/v1/chat/completions", 405, "method_not_allowed"),
        ("put", "/v1/models", 405, "method_not_allowed"),
        ("post", "/v1/embeddings", 404, "not_found"),
        ("get", "/v2/anything", 404, "not_found"),
    ],
)
def test_wrong_method_or_route(client, method, path, status, code):
    err = error_of(getattr(client, method)(path), status)
    assert err["code"] == code


def test_chat_without_template_is_a_clear_error(make_client, loaded):
    model, tokenizer = loaded
    template = tokenizer._tokenizer.chat_template
    tokenizer._tokenizer.chat_template = None
    try:
        client = make_client()
        err = error_of(client.post(C, json={"messages": CHAT}), 400)
        assert "chat template" in err["message"]
    finally:
        tokenizer._tokenizer.chat_template = template


# ------------------------------------------------------------ real server, openai


@contextlib.contextmanager
def serving(app):
    """The real server (uvicorn) on a free loopback port; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, daemon=True
    )
    thread.start()
    try:
        _wait_for(lambda: server.started, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        app.state.worker.stop()
        sock.close()


def test_real_server_with_the_openai_client(loaded):
    openai = pytest.importorskip("openai")
    import httpx

    counter = {"n": 0}
    app = create_app(
        *loaded,
        decoding=DECODING,
        stream_fn=_counting(counter, delay=0.002),
        api_key="k",
    )
    with serving(app) as base:
        oa = openai.OpenAI(base_url=base + "/v1", api_key="k", max_retries=0)
        assert [m.id for m in oa.models.list().data] == ["tiny-model"]

        want_chat = python_api(loaded, chat_prompt(loaded, CHAT), 16)
        r = oa.chat.completions.create(
            model="tiny-model", messages=CHAT, max_tokens=16, temperature=0
        )
        assert r.choices[0].message.content == want_chat
        assert (
            r.usage.completion_tokens == 16
            and r.usage.prompt_tokens_details.cached_tokens >= 0
        )
        pieces, usage = [], None
        for chunk in oa.chat.completions.create(
            model="tiny-model",
            messages=CHAT,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage:
                usage = chunk.usage
        assert "".join(pieces) == want_chat and usage.completion_tokens == 16
        assert (
            usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1
        )  # a hit

        want = python_api(loaded, PROMPT, 20)
        assert (
            oa.completions.create(model="tiny-model", prompt=PROMPT, max_tokens=20)
            .choices[0]
            .text
            == want
        )
        text = "".join(
            c.choices[0].text
            for c in oa.completions.create(
                model="tiny-model", prompt=PROMPT, max_tokens=20, stream=True
            )
        )
        assert text == want
        stop = want.split(" ")[5]
        cut = oa.completions.create(
            model="tiny-model", prompt=PROMPT, max_tokens=20, stop=[stop]
        )
        assert (
            cut.choices[0].text == want[: want.index(stop)]
            and cut.choices[0].finish_reason == "stop"
        )

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=base + "/v1", api_key="wrong", max_retries=0
            ).models.list()
        with pytest.raises(openai.NotFoundError):
            oa.completions.create(model="gpt-4o", prompt=PROMPT)
        with pytest.raises(openai.BadRequestError):
            oa.chat.completions.create(model="tiny-model", messages=[], max_tokens=2)

        # A client that hangs up mid-stream stops its generation at the next token.
        counter["n"] = 0
        with httpx.stream(
            "POST",
            base + "/v1/completions",
            headers={"Authorization": "Bearer k"},
            json={"prompt": PROMPT, "max_tokens": 400, "stream": True},
            timeout=30,
        ) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    break
        _wait_for(lambda: app.state.worker.current is None, 30)
        assert counter["n"] < 400
        assert httpx.get(base + "/health").json()["status"] == "ok"


def _chromium():
    """A headless Chromium through Debian's chromium and chromium-driver, or skip."""
    webdriver = pytest.importorskip("selenium.webdriver")
    import shutil

    def found(names, paths):  # on PATH, or where Debian puts them
        hits = [shutil.which(n) for n in names] + [
            p for p in paths if os.access(p, os.X_OK)
        ]
        return next((h for h in hits if h), None)

    # scripts/install.sh installs them on Linux (apt-get install chromium chromium-driver).
    browser = found(["chromium", "chromium-browser"], ["/usr/bin/chromium"])
    driver = found(
        ["chromedriver"], ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
    )
    if not (browser and driver):
        pytest.skip("needs Debian's chromium and chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = browser
    return webdriver.Chrome(service=Service(driver), options=options)


def test_chat_page_in_headless_chromium(loaded):
    """The page streams a typed message's answer and shows the figures."""
    browser = _chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = create_app(*loaded, decoding=DECODING, api_key="k")
    try:
        with serving(app) as base:
            browser.get(base + "/")
            key = browser.find_element(By.ID, "key")
            key.send_keys("k")
            browser.execute_script(
                "arguments[0].dispatchEvent(new Event('change'))", key
            )
            browser.find_element(By.ID, "maxtok").send_keys("12")
            box = browser.find_element(By.ID, "input")
            for turn, text in enumerate(["t5 t17 t33", "t40 t41"], 1):
                box.send_keys(text + "\n")
                WebDriverWait(browser, 30).until(
                    lambda b: len(
                        [
                            e
                            for e in b.find_elements(By.CLASS_NAME, "stats")
                            if "tokens/pass" in e.text
                        ]
                    )
                    == turn
                )
            answers = [browser.find_element(By.ID, f"answer-{i}").text for i in (1, 3)]
            stats = [e.text for e in browser.find_elements(By.CLASS_NAME, "stats")]
    finally:
        browser.quit()
    messages = [{"role": "user", "content": "t5 t17 t33"}]
    assert answers[0] == python_api(loaded, chat_prompt(loaded, messages), 12)
    messages += [
        {"role": "assistant", "content": answers[0]},
        {"role": "user", "content": "t40 t41"},
    ]
    assert answers[1] == python_api(loaded, chat_prompt(loaded, messages), 12)
    cached = [re.search(r"(\d+)/(\d+) prompt tokens cached", t) for t in stats]
    assert "tokens/s" in stats[0] and int(cached[0][1]) == 0
    assert int(cached[1][1]) > 0  # the second turn reused the first from the cache


def test_load_8_clients_with_disconnects_and_bad_requests():
    """benchmarks/load_server.py (CI also runs it on its own): the real server
    process, 8 concurrent clients x 10 requests a round, 3 rounds, mixing
    disconnects and bad requests; every good answer equal to the Python API's (none
    lost or mixed up), the server healthy after and its resident memory flat."""
    pytest.importorskip("httpx")
    if not os.path.exists("/proc/self/status"):
        pytest.skip("reads the server's resident set size from /proc")
    from mlx_specstream.benchmarks import load_server

    report = load_server.run(clients=8, requests=10, rounds=3, timeout=240)
    assert report["problems"] == [], report
    assert report["rounds"] == 3 and report["requests"] == 3 * 8 * 10
    assert report["good_answered"] >= 3 * 8 * 4 and report["failed"] == 0
    assert report["served"] >= report["good_answered"]
    assert report["rss_growth_mb"] is not None
    assert report["rss_growth_mb"] <= report["rss_margin_mb"]


def test_pipelined_server_serves_greedy_and_sampled_requests(make_client, loaded):
    """``--pipelined``: greedy requests decode pipelined and equal plain decoding;
    sampled or penalised ones (which it cannot verify) decode the usual way."""
    client = make_client(decoding=dict(max_tokens=24, pipelined=True))
    model, tokenizer = loaded
    want = generate(model, tokenizer, PROMPT, max_tokens=16, speculative=False)
    r = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 16})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == want
    for extra in ({"temperature": 0.8, "seed": 3}, {"repetition_penalty": 1.3}):
        r = client.post(
            "/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, **extra}
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1
