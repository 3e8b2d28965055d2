# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""``mlx-specstream chat``: multi-turn chat with streaming output.

The prompt cache keeps the conversation across turns, so each turn templates and
prefills only its own message, as ``mlx_lm.chat`` does.
"""

import argparse
import sys
from typing import List, Optional

from mlx_lm.tokenizer_utils import TokenizerWrapper

from .blas import ensure_openblas
from .cli_args import add_decoding_args, load_from_args
from .generate import stream_generate
from .models.cache import make_prompt_cache
from .models.llama import Model


def turn_tokens(
    tokenizer: TokenizerWrapper, user: str, system: Optional[str] = None
) -> List[int]:
    """One turn in the chat template: the system prompt (if any) and the user's
    message, then the assistant's header (as ``mlx_lm.chat`` templates each turn)."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    # The template writes its own special tokens (BOS included, where it has one).
    return list(tokenizer.encode(text, add_special_tokens=False))


def chat_loop(
    model: Model,
    tokenizer: TokenizerWrapper,
    kwargs: dict,
    system: Optional[str] = None,
    stats: bool = False,
) -> None:
    """Read user turns from stdin until EOF or ``/quit``; Ctrl-C stops one answer."""
    cache = make_prompt_cache(model)
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
            cache = make_prompt_cache(model)
            continue
        if not user.strip():
            continue
        prompt = turn_tokens(tokenizer, user, system)
        last = None
        try:
            for last in stream_generate(
                model, tokenizer, prompt, prompt_cache=cache, **kwargs
            ):
                print(last.text, end="", flush=True)
        except KeyboardInterrupt:
            print(" [interrupted]", end="")  # the cache keeps the answer so far
        except ValueError as e:  # e.g. the conversation outgrew the context
            print(f"error: {e}; /reset starts a new conversation", end="")
        print()
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


if __name__ == "__main__":
    ensure_openblas()
    main()
