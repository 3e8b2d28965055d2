# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Load test of the real server: concurrent clients, disconnects and bad requests.

    python benchmarks/load_server.py [--clients 8] [--requests 10] [--rounds 4]
        [--timeout 300] [--rss-margin-mb 24] [--model DIR]

Builds a tiny random model in a temporary directory (nothing is downloaded, unless
``--model`` names one), starts ``python -m mlx_specstream.server`` on a free loopback
port with ``--api-key``, and computes every expected answer once through the Python
API (``generate`` with the server's decoding flags). Each round, ``--clients``
threads send ``--requests`` requests each, mixing chat and completion (streamed and
not) with clients that hang up (mid-stream, or before a non-streamed answer) and bad
requests (malformed JSON, a negative temperature, no messages, an unknown model, no
API key). Checks: every good request is answered with its prompt's expected answer
(none lost, none mixed up: the clients' prompts differ), every bad one gets its
status, the server is healthy after (nothing waiting, no failed request), it batched
concurrent requests at least once (the tiny model), and its
resident memory (``VmRSS`` of the server process, after each round) does not grow
from the second round to the last by more than ``--rss-margin-mb`` (the first round
warms up allocators and the prompt cache). Bounded by ``--timeout`` seconds in all.
Exits 1 with each problem printed otherwise. CI runs it (``.ci/run``);
``tests/test_server.py`` calls ``run`` with fewer rounds.
"""

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx

API_KEY = "load-test-key"
# The tiny model: a word-level vocabulary t1..t95 with these role words.
TINY = dict(
    model_type="llama",
    hidden_size=64,
    num_hidden_layers=4,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=96,
    max_position_embeddings=512,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)
TEMPLATE = (
    "{% for m in messages %}"
    "{{ {'system': 't3', 'user': 't1', 'assistant': 't2'}[m['role']] }} {{ m['content'] }} "
    "{% endfor %}{% if add_generation_prompt %}t2 {% endif %}"
)
# Speculation on (a tree of streams and prompt lookup), fixed so nothing calibrates.
DECODING_FLAGS = ["--tree-budget", "8", "--stream-pass", "tree", "--prompt-lookup"]
MAX_TOKENS = 8
C, T = "/v1/chat/completions", "/v1/completions"
# Request kinds by (client + request) % len(KINDS); three of six are good requests.
KINDS = ["bad", "chat_stream", "hang_up_stream", "completion", "chat", "hang_up"]
BAD = [  # (path, raw body or JSON, headers, status)
    (T, '{"prompt": "t5",', {"content-type": "application/json"}, 400),
    (T, {"prompt": "t5", "temperature": -1}, {}, 400),
    (C, {"max_tokens": 4}, {}, 400),
    (C, {"model": "gpt-4o", "messages": [{"role": "user", "content": "t5"}]}, {}, 404),
    (T, {"prompt": "t5"}, {"Authorization": ""}, 401),
]


def build_tiny_model(path: Path) -> Path:
    """A random llama with random streams, saved with a word-level tokenizer."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from mlx_specstream.format import StreamArgs
    from mlx_specstream.models.llama import Model, ModelArgs
    from mlx_specstream.utils import save_model

    mx.random.seed(0)
    model = Model(
        ModelArgs.from_dict(TINY), StreamArgs(num_streams=3, num_stream_layers=2)
    )
    # Peaky logits: greedy ties are impossible, answers differ between prompts.
    emb = model.model.embed_tokens.weight
    model.model.embed_tokens.weight = mx.random.normal(emb.shape)
    params = tree_flatten(model.streams.parameters())
    model.streams.update(
        tree_unflatten(
            [
                (
                    (k, 0.5 * mx.random.normal(v.shape) / max(1, v.shape[-2]) ** 0.5)
                    if v.ndim > 1
                    else (k, 0.5 * mx.random.normal(v.shape))
                )
                for k, v in params
            ]
        )
    )
    mx.eval(model.parameters())
    save_model(model, TINY, path)
    vocab = {"</s>": 0, **{f"t{i}": i for i in range(1, TINY["vocab_size"])}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="</s>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    hf.chat_template = TEMPLATE
    hf.save_pretrained(path)
    return path


def prompts_for(n: int, tiny: bool) -> List[str]:
    if tiny:
        words = [(5 + i, 17 + 3 * i, 33 + 2 * i, 60 - i, 70 + 2 * i) for i in range(n)]
        return [" ".join(f"t{w}" for w in ws) for ws in words]
    topics = ["rivers", "bread", "chess", "volcanoes", "owls", "bridges", "tea", "rain"]
    return [f"Write one sentence about {topics[i % len(topics)]}." for i in range(n)]


def expected_answers(model_dir: str, prompts: List[str]) -> Dict[str, Dict[str, str]]:
    """Each prompt's answer through the Python API, with the server's decoding flags."""
    from mlx_specstream.cli_args import add_decoding_args, load_from_args
    from mlx_specstream.generate import generate
    from mlx_specstream.prompts import apply_chat_template

    parser = argparse.ArgumentParser()
    add_decoding_args(parser)
    args = parser.parse_args(["--model", model_dir, *DECODING_FLAGS])
    model, tokenizer, kwargs = load_from_args(args)
    kwargs.pop("max_tokens")

    def run(prompt) -> str:
        return generate(model, tokenizer, prompt, max_tokens=MAX_TOKENS, **kwargs)

    out = {"text": {}, "chat": {}}
    for p in prompts:
        out["text"][p] = run(p)
        out["chat"][p] = run(
            apply_chat_template(tokenizer, [{"role": "user", "content": p}])
        )
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, field: str) -> Optional[float]:
    """A /proc/<pid>/status figure in MB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/health", timeout=2).json()["status"] == "ok":
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not start in time")


@contextlib.contextmanager
def server_process(model_dir: str, extra: List[str] = ()):
    """``python -m mlx_specstream.server`` on a free loopback port: (base URL, process)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLX_SPECSTREAM_API_KEY"}
    cmd = [
        sys.executable,
        "-m",
        "mlx_specstream.server",
        "--model",
        model_dir,
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def sse_text(body: str, kind: str) -> Optional[str]:
    """The text of an SSE answer, or None when it does not end with [DONE]."""
    data = [
        line[len("data: ") :] for line in body.splitlines() if line.startswith("data: ")
    ]
    if not data or data[-1] != "[DONE]":
        return None
    parts = []
    for d in data[:-1]:
        choices = json.loads(d).get("choices") or []
        for c in choices:
            parts.append(
                c.get("text", "") if kind == "text" else c["delta"].get("content", "")
            )
    return "".join(parts)


def client(
    base: str,
    c: int,
    requests: int,
    prompts: List[str],
    want: dict,
    problems: list,
    tally: dict,
    lock: threading.Lock,
) -> None:
    """One client's requests, in order; problems and counts go to the shared lists."""
    auth = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=base, timeout=120, headers=auth) as http:
        for i in range(requests):
            p = prompts[(c + 3 * i) % len(prompts)]
            kind = KINDS[(c + i) % len(KINDS)]
            chat = {
                "messages": [{"role": "user", "content": p}],
                "max_tokens": MAX_TOKENS,
            }
            text = {"prompt": p, "max_tokens": MAX_TOKENS}
            got = problem = None
            try:
                if kind == "bad":
                    path, body, headers, status = BAD[(3 * c + i) % len(BAD)]
                    kw = {"content": body} if isinstance(body, str) else {"json": body}
                    r = http.post(path, headers=headers, **kw)
                    err = r.json().get("error") or {}
                    if r.status_code != status or not err.get("message"):
                        problem = ("bad", path, r.status_code, r.text[:200])
                elif kind == "hang_up_stream":  # leave after the first event
                    body = {**text, "max_tokens": 300, "stream": True}
                    with http.stream("POST", T, json=body) as r:
                        next(r.iter_lines())
                elif kind == "hang_up":  # leave before a long answer is done
                    with contextlib.suppress(httpx.TimeoutException):
                        http.post(T, json={**text, "max_tokens": 300}, timeout=0.05)
                elif kind == "chat_stream":
                    r = http.post(C, json={**chat, "stream": True})
                    got = sse_text(r.text, "chat"), want["chat"][p]
                elif kind == "chat":
                    r = http.post(C, json=chat)
                    got = r.json()["choices"][0]["message"]["content"], want["chat"][p]
                else:  # completion
                    r = http.post(T, json=text)
                    got = r.json()["choices"][0]["text"], want["text"][p]
            except Exception as e:  # noqa: BLE001 (collected and reported)
                problem = (kind, p, "exception", repr(e))
            with lock:
                tally[kind] = tally.get(kind, 0) + 1
                if got is not None:
                    tally["good_answered"] = tally.get("good_answered", 0) + 1
                    if got[0] != got[1]:
                        problem = (kind, p, "answer", got[0], "expected", got[1])
                if problem:
                    problems.append(problem)


def run(
    clients: int = 8,
    requests: int = 10,
    rounds: int = 4,
    timeout: float = 300,
    rss_margin_mb: float = 24,
    model_dir: Optional[str] = None,
) -> dict:
    """The load test; returns its report (``problems`` empty when it passed)."""
    deadline = time.time() + timeout
    with tempfile.TemporaryDirectory() as tmp:
        tiny = model_dir is None
        if tiny:
            model_dir = str(build_tiny_model(Path(tmp) / "tiny-model"))
        prompts = prompts_for(min(clients, 8), tiny)  # distinct answers
        want = expected_answers(model_dir, prompts)
        problems, tally, lock = [], {}, threading.Lock()
        for kind in ("text", "chat"):  # else a mixed-up answer could pass unseen
            if len(set(want[kind].values())) < len(prompts):
                problems.append(("prompts", kind, "answers not all different", want))
        rss, round_s = [], []
        extra = [*DECODING_FLAGS, "--max-queue", "16", "--prompt-cache-entries", "4"]
        with server_process(model_dir, extra) as (base, proc):
            # Without the key, every endpoint but /health is refused.
            r = httpx.post(base + T, json={"prompt": prompts[0], "max_tokens": 2})
            if r.status_code != 401:
                problems.append(("no key", r.status_code))
            for n in range(rounds):
                tic = time.time()
                threads = [
                    threading.Thread(
                        target=client,
                        args=(base, c, requests, prompts, want, problems, tally, lock),
                        daemon=True,
                    )
                    for c in range(clients)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(max(0.1, deadline - time.time()))
                if any(t.is_alive() for t in threads):
                    problems.append(("timeout", f"round {n + 1} ran past {timeout} s"))
                    break
                # Hung-up requests finish (or are dropped) before memory is read.
                end = time.time() + 30
                while time.time() < end:
                    q = httpx.get(base + "/health", timeout=10).json()["queue"]
                    if not q["running"] and q["waiting"] == 0:
                        break
                    time.sleep(0.05)
                round_s.append(round(time.time() - tic, 2))
                rss.append(proc_status(proc.pid, "VmRSS"))
            health = httpx.get(base + "/health", timeout=10).json()
            hwm = proc_status(proc.pid, "VmHWM")
    good_each = sum(
        KINDS[(c + i) % len(KINDS)] in ("chat_stream", "chat", "completion")
        for c in range(clients)
        for i in range(requests)
    )
    if tally.get("good_answered", 0) != good_each * len(rss):
        problems.append(("lost", tally.get("good_answered", 0), good_each * len(rss)))
    if health["status"] != "ok" or health["failed"] or health["queue"]["waiting"]:
        problems.append(("health", health))
    # Concurrent clients on the tiny Llama model are batched (continuous batching).
    if tiny and clients > 1 and not health.get("batches"):
        problems.append(("batching", "no request was ever decoded in a batch"))
    growth = None
    if len(rss) >= 2 and None not in rss:
        base_mb = rss[1] if len(rss) >= 3 else rss[0]
        growth = round(max(rss[-1], rss[-2]) - base_mb, 1)
        if growth > rss_margin_mb:
            problems.append(("memory", f"resident MB by round {rss}: +{growth} MB"))
    return {
        "clients": clients,
        "requests_per_client": requests,
        "rounds": len(rss),
        "requests": sum(v for k, v in tally.items() if k != "good_answered"),
        "by_kind": {k: v for k, v in tally.items() if k != "good_answered"},
        "good_answered": tally.get("good_answered", 0),
        "round_s": round_s,
        "rss_mb": [None if v is None else round(v, 1) for v in rss],
        "rss_growth_mb": growth,
        "rss_margin_mb": rss_margin_mb,
        "peak_rss_mb": None if hwm is None else round(hwm, 1),
        "served": health["served"],
        "failed": health["failed"],
        "batches": health.get("batches"),
        "problems": problems,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10, help="per client a round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300, help="seconds in all")
    parser.add_argument("--rss-margin-mb", type=float, default=24)
    parser.add_argument("--model", default=None, help="default: a tiny random model")
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    args = parser.parse_args(argv)
    report = run(
        args.clients,
        args.requests,
        args.rounds,
        args.timeout,
        args.rss_margin_mb,
        args.model,
    )
    print(json.dumps(report, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    if report["problems"]:
        print(f"load test FAILED: {len(report['problems'])} problems", file=sys.stderr)
        return 1
    print(
        f"load test passed: {report['requests']} requests in {report['rounds']} rounds, "
        f"{report['good_answered']} good answers all correct, resident memory "
        f"{report['rss_mb']} MB (growth {report['rss_growth_mb']} MB, "
        f"margin {report['rss_margin_mb']} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
