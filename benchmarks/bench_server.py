# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Our server next to ``mlx_lm.server`` on the same weights, and plain decoding.

    python benchmarks/bench_server.py --model smollm2-135m-instruct \
        [--tokens 64] [--prompts 8] [--concurrency 1,4,8] [--turns 4] \
        [--out benchmarks/results/bench_server]

Starts, on free loopback ports: ``mlx-specstream server`` with its defaults (the tree
calibrated for this device), the same with ``--tree-budget N`` (speculation forced
on), the same with ``--prompt-cache-entries 0`` (multi-turn only) and
``python -m mlx_lm server`` on the model's MLX directory (with OpenBLAS preloaded, as
our commands preload it). Every request is a streamed, greedy chat completion with
the same messages (both servers apply the tokenizer's chat template with
``add_generation_prompt``; the prompt token counts they report are compared).
Servers are interleaved request by request (concurrency 1) or level by level.

Reported per server: time to first token (p50/p95), per-request latency and
tokens/s, aggregate tokens/s at each concurrency, tokens per pass, cached_tokens; a
multi-turn chat that resends its history each turn (latency and cached tokens per
turn, with and without our prompt cache); whether answers equal plain decoding
through the Python API (``stream_generate(..., speculative=False)`` in a subprocess)
and each other; peak resident memory (``VmHWM``) of each server process and of the
plain-decoding process. Writes OUT.json, OUT.md and OUT.png (with matplotlib).
"""

import argparse
import concurrent.futures as futures
import contextlib
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import httpx
from mlx_specstream.benchmarks.load_server import free_port, proc_status

from mlx_specstream.blas import active_blas, find_openblas

PROMPTS = [
    "Name three instruments in a string quartet.",
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about autumn leaves.",
    "Give three tips for learning to play the guitar.",
    "What does a compiler do?",
    "Describe a cat to someone who has never seen one.",
    "List the planets of the solar system in order.",
    "How do I boil an egg?",
]
TURNS = [
    "Hi! Can you suggest a name for a small bakery?",
    "Nice. Now write a one-line slogan for it.",
    "Translate the slogan into French.",
    "Summarise our conversation in one sentence.",
]


# ------------------------------------------------------------------ servers


class Server:
    def __init__(
        self, name: str, cmd: List[str], env: dict, model_field: Optional[str]
    ):
        self.name, self.cmd, self.env, self.model_field = name, cmd, env, model_field
        self.port = free_port()
        self.cmd = [*cmd, "--port", str(self.port)]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait_ready(self, timeout: float = 600) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"{self.name} exited: {err}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/v1/models", timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not start in {timeout} s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def peak_mb(self) -> Optional[float]:
        return proc_status(self.proc.pid, "VmHWM")


def chat(server: Server, messages: List[dict], max_tokens: int) -> dict:
    """One streamed greedy chat completion: text, timings and usage."""
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if server.model_field:
        body["model"] = server.model_field
    parts, usage, first = [], {}, None
    tic = time.perf_counter()
    with httpx.stream(
        "POST", server.base + "/v1/chat/completions", json=body, timeout=600
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            for c in chunk.get("choices") or []:
                piece = (c.get("delta") or {}).get("content") or ""
                if piece:
                    if first is None:
                        first = time.perf_counter() - tic
                    parts.append(piece)
            if chunk.get("usage"):
                usage = chunk["usage"]
    total = time.perf_counter() - tic
    n = int(usage.get("completion_tokens") or 0)
    ours = usage.get("specstream") or {}
    return {
        "text": "".join(parts),
        "latency_s": total,
        "ttft_s": first if first is not None else total,
        "completion_tokens": n,
        "prompt_tokens": usage.get("prompt_tokens"),
        "cached_tokens": (usage.get("prompt_tokens_details") or {}).get(
            "cached_tokens"
        ),
        "tokens_per_s": n / total if total else 0.0,
        "tokens_per_pass": ours.get("tokens_per_pass", 1.0 if n else None),
    }


# ------------------------------------------------------------ plain decoding


def plain_worker(model: str, prompts_file: str, out_file: str, max_tokens: int) -> None:
    """In a subprocess: plain decoding through the Python API, then its VmHWM."""
    import mlx.core as mx

    from mlx_specstream.generate import stream_generate
    from mlx_specstream.prompts import apply_chat_template
    from mlx_specstream.utils import load

    m, tok = load(model)
    mx.eval(m.parameters())  # as the server does before serving
    texts, seconds, tokens = [], 0.0, 0
    for p in json.loads(Path(prompts_file).read_text()):
        prompt = apply_chat_template(tok, [{"role": "user", "content": p}])
        tic, parts = time.perf_counter(), []
        for r in stream_generate(m, tok, prompt, max_tokens, speculative=False):
            if r.finish_reason != "stop":
                parts.append(r.text)
                tokens += 1
            else:
                parts.append(r.text)
        seconds += time.perf_counter() - tic
        texts.append("".join(parts))
    out = {
        "texts": texts,
        "tokens_per_s": tokens / seconds if seconds else 0.0,
        "peak_rss_mb": proc_status(os.getpid(), "VmHWM"),
        "blas": active_blas(),
    }
    Path(out_file).write_text(json.dumps(out))


def plain_decoding(model: str, prompts: List[str], max_tokens: int, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        pf, of = Path(tmp) / "prompts.json", Path(tmp) / "out.json"
        pf.write_text(json.dumps(prompts))
        cmd = [sys.executable, __file__, "--plain-worker", str(pf), str(of)]
        cmd += ["--model", model, "--tokens", str(max_tokens)]
        subprocess.run(cmd, env=env, check=True)
        return json.loads(of.read_text())


# ----------------------------------------------------------------- figures


def pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(results: List[dict], wall_s: float) -> dict:
    tokens = sum(r["completion_tokens"] for r in results)
    tpp = [r["tokens_per_pass"] for r in results if r["tokens_per_pass"]]
    return {
        "requests": len(results),
        "ttft_p50_s": pct([r["ttft_s"] for r in results], 0.5),
        "ttft_p95_s": pct([r["ttft_s"] for r in results], 0.95),
        "latency_p50_s": pct([r["latency_s"] for r in results], 0.5),
        "request_tokens_per_s_p50": pct([r["tokens_per_s"] for r in results], 0.5),
        "aggregate_tokens_per_s": tokens / wall_s if wall_s else 0.0,
        "tokens_per_pass": statistics.mean(tpp) if tpp else None,
        "completion_tokens": tokens,
        "wall_s": wall_s,
    }


def run_level(server: Server, prompts: List[str], conc: int, n: int) -> tuple:
    tic = time.perf_counter()
    with futures.ThreadPoolExecutor(conc) as pool:
        results = list(
            pool.map(
                lambda p: chat(server, [{"role": "user", "content": p}], n), prompts
            )
        )
    return results, time.perf_counter() - tic


def fmt(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(report: dict) -> str:
    names = list(report["servers"])
    lines = [
        f"# Server bench ({report['date']})",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {report['machine']}. Model: `{report['model']}`, {report['tokens']} "
        f"tokens a request, greedy, streamed chat completions.",
        "",
        "## Single-turn prompts by concurrency",
        "",
        "| server | concurrency | TTFT p50 s | TTFT p95 s | latency p50 s | tok/s per request p50 "
        "| aggregate tok/s | tokens/pass | equal to plain decoding |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for level, by_server in report["levels"].items():
        for name in names:
            if name not in by_server:
                continue
            s = by_server[name]
            lines.append(
                f"| {name} | {level} | {fmt(s['ttft_p50_s'], 3)} | {fmt(s['ttft_p95_s'], 3)} "
                f"| {fmt(s['latency_p50_s'])} | {fmt(s['request_tokens_per_s_p50'], 1)} "
                f"| {fmt(s['aggregate_tokens_per_s'], 1)} | {fmt(s['tokens_per_pass'])} "
                f"| {s['equal_to_plain']}/{s['requests']} |"
            )
    lines += [
        "",
        "## Multi-turn chat (the history resent every turn)",
        "",
        "| server | turn | prompt tokens | cached tokens | TTFT s | latency s | tokens |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, turns in report["multi_turn"].items():
        for i, t in enumerate(turns, 1):
            lines.append(
                f"| {name} | {i} | {fmt(t['prompt_tokens'])} | {fmt(t['cached_tokens'])} "
                f"| {fmt(t['ttft_s'], 3)} | {fmt(t['latency_s'])} | {t['completion_tokens']} |"
            )
    lines += ["", "## Answers and memory", ""]
    for k, v in report["answers"].items():
        lines.append(f"- {k}: {v}")
    lines += [
        "",
        "| process | peak resident MB (VmHWM) |",
        "| --- | --- |",
    ]
    for k, v in report["peak_rss_mb"].items():
        lines.append(f"| {k} | {fmt(v, 0)} |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    levels = [int(k) for k in report["levels"]]
    for name in report["servers"]:
        rows = [report["levels"][str(c)].get(name) for c in levels]
        if None in rows:
            continue
        axes[0].plot(levels, [r["ttft_p50_s"] for r in rows], "o-", label=name)
        axes[1].plot(
            levels, [r["aggregate_tokens_per_s"] for r in rows], "o-", label=name
        )
    axes[0].set(xlabel="concurrent clients", ylabel="TTFT p50 (s)")
    axes[1].set(xlabel="concurrent clients", ylabel="aggregate tokens/s")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"{report['model']} on {report['machine']} ({report['date']})", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# -------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument(
        "--tree-budget", type=int, default=8, help="the speculation-on server's tree"
    )
    parser.add_argument("--out", default="benchmarks/results/bench_server")
    parser.add_argument("--plain-worker", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.plain_worker:
        return plain_worker(args.model, *args.plain_worker, args.tokens)

    from mlx_specstream.loading.registry import resolve

    model_dir = str(resolve(args.model))
    env = {k: v for k, v in os.environ.items() if k != "MLX_SPECSTREAM_API_KEY"}
    blas_env = dict(env)
    openblas = find_openblas()
    if openblas and sys.platform.startswith("linux"):  # as ensure_openblas does
        blas_env["LD_PRELOAD"] = ":".join(
            filter(None, [openblas, env.get("LD_PRELOAD")])
        )
    ours = [sys.executable, "-m", "mlx_specstream.server", "--model", args.model]
    ours += ["--log-level", "warning", "--max-tokens", str(args.tokens)]
    spec = f"mlx-specstream --tree-budget {args.tree_budget}"
    servers = {
        "mlx-specstream": Server("mlx-specstream", ours, env, None),
        spec: Server(spec, [*ours, "--tree-budget", str(args.tree_budget)], env, None),
        "mlx-specstream, no prompt cache": Server(
            "mlx-specstream, no prompt cache",
            [*ours, "--prompt-cache-entries", "0"],
            env,
            None,
        ),
        "mlx_lm.server": Server(
            "mlx_lm.server",
            [sys.executable, "-m", "mlx_lm", "server", "--model", model_dir]
            + ["--log-level", "WARNING", "--max-tokens", str(args.tokens)],
            blas_env,
            model_dir,
        ),
    }
    single = ["mlx-specstream", spec, "mlx_lm.server"]
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    levels = [int(c) for c in args.concurrency.split(",")]
    report = {
        "date": datetime.date.today().isoformat(),
        "command": "python "
        + " ".join(
            [os.path.relpath(__file__) if os.path.exists(__file__) else __file__]
            + (argv if argv is not None else sys.argv[1:])
        ),
        "machine": f"{os.cpu_count()}-core {platform.machine()} {platform.system()}, "
        f"MLX CPU, fp32, {'OpenBLAS' if openblas else 'reference BLAS'}",
        "model": args.model,
        "tokens": args.tokens,
        "servers": {},
        "levels": {},
        "multi_turn": {},
    }
    try:
        for s in servers.values():  # started one after another: 2 cores
            s.start()
            s.wait_ready()
        for s in servers.values():  # warm-up, not measured
            chat(s, [{"role": "user", "content": "Hello"}], 4)
        print("plain decoding through the Python API ...", flush=True)
        plain = plain_decoding(args.model, prompts, args.tokens, blas_env)
        report["servers"] = {n: servers[n].cmd for n in single}
        first_answers = {}
        for level in levels:
            by_server, order = {}, list(single)
            if level == 1:  # interleaved request by request, rotating the order
                res = {n: [] for n in single}
                tic = {n: 0.0 for n in single}
                for i, p in enumerate(prompts):
                    for n in order[i % 3 :] + order[: i % 3]:
                        r = chat(
                            servers[n], [{"role": "user", "content": p}], args.tokens
                        )
                        res[n].append(r)
                        tic[n] += r["latency_s"]
                results = {n: (res[n], tic[n]) for n in single}
            else:  # level by level, rotating the order
                k = levels.index(level) % 3
                results = {}
                for n in order[k:] + order[:k]:
                    results[n] = run_level(servers[n], prompts, level, args.tokens)
            for n, (rs, wall) in results.items():
                s = summary(rs, wall)
                s["equal_to_plain"] = sum(
                    r["text"] == t for r, t in zip(rs, plain["texts"])
                )
                s["prompt_tokens"] = [r["prompt_tokens"] for r in rs]
                by_server[n] = s
                first_answers.setdefault(n, [r["text"] for r in rs])
                print(
                    n,
                    level,
                    json.dumps({k: v for k, v in s.items() if k != "prompt_tokens"}),
                )
            report["levels"][str(level)] = by_server
        # Multi-turn: each server follows its own answers, interleaved turn by turn.
        multi = [
            "mlx-specstream",
            "mlx-specstream, no prompt cache",
            spec,
            "mlx_lm.server",
        ]
        history = {n: [] for n in multi}
        for n in multi:
            report["multi_turn"][n] = []
        for turn in TURNS[: args.turns]:
            for n in multi:
                history[n].append({"role": "user", "content": turn})
                r = chat(servers[n], history[n], args.tokens)
                history[n].append({"role": "assistant", "content": r["text"]})
                report["multi_turn"][n].append({k: v for k, v in r.items()})
                print(
                    n, "turn", len(history[n]) // 2, r["latency_s"], r["cached_tokens"]
                )
        peak = {n: s.peak_mb() for n, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
    ours_tok = report["levels"][str(levels[0])]["mlx-specstream"]["prompt_tokens"]
    lm_tok = report["levels"][str(levels[0])]["mlx_lm.server"]["prompt_tokens"]
    same_turns = all(
        report["multi_turn"]["mlx-specstream"][i]["text"] == t["text"]
        for i, t in enumerate(report["multi_turn"]["mlx_lm.server"])
    )
    report["answers"] = {
        "prompt token counts equal between the servers": ours_tok == lm_tok,
        "mlx-specstream == plain decoding (concurrency 1)": (
            f"{report['levels'][str(levels[0])]['mlx-specstream']['equal_to_plain']}"
            f"/{len(prompts)}"
        ),
        f"{spec} == plain decoding (concurrency 1)": (
            f"{report['levels'][str(levels[0])][spec]['equal_to_plain']}/{len(prompts)}"
        ),
        "mlx_lm.server == plain decoding (concurrency 1)": (
            f"{report['levels'][str(levels[0])]['mlx_lm.server']['equal_to_plain']}"
            f"/{len(prompts)}"
        ),
        "multi-turn answers equal, mlx-specstream vs mlx_lm.server": same_turns,
        "multi-turn answers equal, with vs without our prompt cache": all(
            a["text"] == b["text"]
            for a, b in zip(
                report["multi_turn"]["mlx-specstream"],
                report["multi_turn"]["mlx-specstream, no prompt cache"],
            )
        ),
        "plain decoding tokens/s (Python API)": round(plain["tokens_per_s"], 1),
    }
    report["plain"] = plain
    report["peak_rss_mb"] = {
        **{f"server: {n}": v for n, v in peak.items()},
        "plain decoding, Python API (weights evaluated first)": plain["peak_rss_mb"],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    out.with_suffix(".md").write_text(md)
    plot(report, out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
