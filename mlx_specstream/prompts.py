# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Prompts: token ids, chat templating, and prompt files."""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from mlx_lm.tokenizer_utils import TokenizerWrapper


def encode_prompt(
    tokenizer: TokenizerWrapper, prompt: Union[str, Sequence[int]]
) -> List[int]:
    """Token ids of ``prompt``; BOS is added unless the text already starts with it."""
    if isinstance(prompt, str):
        bos = tokenizer.bos_token
        add_special = bos is None or not prompt.startswith(bos)
        return list(tokenizer.encode(prompt, add_special_tokens=add_special))
    return [int(t) for t in prompt]


def apply_chat_template(
    tokenizer: TokenizerWrapper,
    prompt: Union[str, List[Dict[str, str]]],
    system: Optional[str] = None,
) -> str:
    """A user message (or a list of chat messages) in the model's chat template.

    Without a chat template a single message is returned as it is.
    """
    messages = (
        [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    )
    if system:
        messages = [{"role": "system", "content": system}] + list(messages)
    if not getattr(tokenizer, "chat_template", None):
        if isinstance(prompt, str):
            return prompt
        raise ValueError("the tokenizer has no chat template for chat messages")
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )


def read_prompts(path: Union[str, Path]) -> List[str]:
    """Calibration prompts from a file: JSONL records with ``prompt`` (or chat
    ``messages``, first user turn), or plain text with one prompt per line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        prompts = lines
    else:
        prompts = []
        for i, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                prompt = rec.get("prompt") or next(
                    m["content"] for m in rec["messages"] if m["role"] == "user"
                )
            except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
                raise ValueError(
                    f"{path}:{i}: expected a 'prompt' string or chat 'messages'"
                ) from None
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts
