# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream chat``: multi-turn chat with streaming output."""

import argparse
import sys

from .cli_args import add_decoding_args, load_from_args
from .generate import stream_generate


def chat_loop(
    model, tokenizer, kwargs: dict, system: str = None, stats: bool = False
) -> None:
    """Read user turns from stdin until EOF or ``/quit``; Ctrl-C stops one answer."""
    history = [{"role": "system", "content": system}] if system else []
    print("Type a message; /reset clears the history, /quit or Ctrl-D leaves.")
    while True:
        try:
            user = input(">> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if user.strip() in ("/quit", "/exit"):
            return
        if user.strip() == "/reset":
            history = history[:1] if system else []
            continue
        if not user.strip():
            continue
        history.append({"role": "user", "content": user})
        prompt = tokenizer.apply_chat_template(
            history, tokenize=False, add_generation_prompt=True
        )
        answer, last = "", None
        try:
            for last in stream_generate(model, tokenizer, prompt, **kwargs):
                answer += last.text
                print(last.text, end="", flush=True)
        except KeyboardInterrupt:
            print(" [interrupted]", end="")
        print()
        history.append({"role": "assistant", "content": answer})
        if stats and last is not None:
            print(
                f"[{last.generation_tps:.1f} tokens/s, {last.tokens_per_pass:.2f} tokens/pass]"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="mlx-specstream chat", description="Chat with a model."
    )
    add_decoding_args(parser)
    parser.add_argument("--system-prompt", default=None)
    args = parser.parse_args(argv)
    try:
        model, tokenizer, kwargs = load_from_args(args)
        if not tokenizer.chat_template:
            raise ValueError(f"{args.model}: the tokenizer has no chat template")
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    chat_loop(model, tokenizer, kwargs, args.system_prompt, stats=args.verbose)
