# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Conversations the model writes itself (Magpie: Xu et al. 2024, arXiv 2406.08464).

No chat dataset can be downloaded here, but an aligned model writes user turns when
it is given the chat template only up to the user header. A 135M model left alone
writes mostly greetings, so each user turn is steered: by a category of what chat
users bring (``CATEGORIES``) and an opening phrase the model continues, sampled. The
model's own greedy answer follows (the target the streams learn), and some
conversations get a second user turn and answer the same way. Categories that work
on a given text (summaries, answers from a context, long retrieved inputs) first
have the model write the passages.

Every conversation is a function of (seed, index): its category, openers and its
split (``SPLITS`` by a hash of the index, so splits are disjoint by construction).
Sampling is batched, so a chunk's random draws depend on the chunk; rerunning a
file resumes after its last whole chunk. Near-duplicate user turns (the same first
eight words) and degenerate ones (too short, unfinished, a word repeated) are
dropped, counted in each chunk's log line.

    python -m train.datasets.magpie --out data/magpie/conversations.jsonl \\
        --conversations 2000 --seed 20261208
"""

import argparse
import hashlib
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

SPLITS = {"train": 0.9, "valid": 0.1}
SECOND_TURN = 0.3  # share of conversations that get a follow-up turn
USER_TOKENS, ANSWER_TOKENS, PASSAGE_TOKENS = 96, 256, 160

# What chat users bring, each with openers the model continues into a user turn.
CATEGORIES: Dict[str, Tuple[str, ...]] = {
    "writing": (
        "Write a short poem about",
        "Write a story about",
        "Can you write an email to",
        "Help me write a cover letter for",
        "Write a product description for",
        "Write a speech for",
        "Draft a blog post about",
    ),
    "roleplay": (
        "Pretend you are",
        "Let's play a game. You are",
        "Act as a travel guide and",
        "Imagine you are a teacher and",
        "You are a chef. Tell me",
    ),
    "reasoning": (
        "If all",
        "Which is heavier,",
        "What would happen if",
        "Explain why",
        "Is it true that",
        "A farmer has",
    ),
    "math": (
        "Solve this word problem:",
        "A train leaves",
        "How many",
        "Calculate",
        "What is the sum of",
        "Sarah has",
    ),
    "coding": (
        "Write a Python function that",
        "How do I",
        "What is wrong with this code:",
        "Write a SQL query that",
        "Explain what this JavaScript does:",
        "Write a bash script to",
    ),
    "extraction": (
        "Extract the names and dates from this text:",
        "List all the cities mentioned in:",
        "Find the email addresses in the following:",
        "From this sentence, pull out the",
    ),
    "science": (
        "How does",
        "Why is the sky",
        "What is the difference between",
        "Explain how photosynthesis",
        "What causes",
    ),
    "humanities": (
        "Who was",
        "What was the cause of",
        "Tell me about the history of",
        "What is the meaning of",
        "Why did the",
    ),
    "translation": (
        "Translate to French:",
        "How do you say this in Spanish:",
        "Translate this sentence into German:",
        "What does this mean in English:",
    ),
    "summarize": (
        "Summarize the text above in two sentences.",
        "Give me the main points of this text.",
        "Write a one-sentence summary of the passage.",
    ),
    "context_qa": (
        "Based on the text above,",
        "According to the passage,",
        "Using only the information above,",
    ),
    "long_context": (
        "Using the documents above,",
        "Compare what the documents above say about",
        "Which document above mentions",
    ),
}
PASSAGES = {"summarize": 1, "context_qa": 1, "long_context": 3}  # texts per turn
PASSAGE_OPENERS = (
    "Write a short news article about",
    "Write a paragraph explaining",
    "Write a short encyclopedia entry about",
    "Write a product review of",
    "Write a short report on",
)
FOLLOW_UPS = (
    "Can you",
    "Thanks! Now",
    "Why",
    "Could you make it",
    "What about",
    "Give me another",
)


@dataclass
class Plan:
    """What conversation ``index`` will be, before the model writes it."""

    index: int
    split: str
    category: str
    opener: str
    passage_openers: List[str]
    follow_up: Optional[str]
    # Filled as the model writes: passages, then (user, answer) turns.
    passages: List[str] = field(default_factory=list)
    turns: List[Tuple[str, str]] = field(default_factory=list)
    key: str = ""  # its first user turn's dedup key


def split_of(seed: int, index: int) -> str:
    """The split of conversation ``index``: a hash, so splits never share one."""
    h = int(hashlib.sha256(f"magpie:{seed}:{index}".encode()).hexdigest()[:8], 16)
    return "valid" if h / 0xFFFFFFFF < SPLITS["valid"] else "train"


def plan(seed: int, index: int) -> Plan:
    rng = random.Random(f"magpie:{seed}:{index}")
    names = sorted(CATEGORIES)
    category = names[index % len(names)]  # balanced across categories
    return Plan(
        index,
        split_of(seed, index),
        category,
        rng.choice(CATEGORIES[category]),
        [rng.choice(PASSAGE_OPENERS) for _ in range(PASSAGES.get(category, 0))],
        rng.choice(FOLLOW_UPS) if rng.random() < SECOND_TURN else None,
    )


def degenerate(text: str, min_words: int = 4) -> bool:
    """Too short, or a word repeated four times in a row (a looping sampler)."""
    words = text.split()
    if len(words) < min_words:
        return True
    return re.search(r"\b(\w+)(\W+\1\b){3}", text) is not None


def messages(turns: Sequence[Tuple[str, str]]) -> List[Dict[str, str]]:
    """(user, answer) turns as chat messages."""
    out = []
    for user, answer in turns:
        out += [
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    return out


def _whole_sentences(text: str) -> str:
    """``text`` up to its last full stop (a passage cut at the token limit)."""
    cut = max(text.rfind(". "), text.rfind(".\n"), text.rfind("."))
    return text[: cut + 1] if cut > len(text) // 2 else text


def dedup_key(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower())[:8])


class Writer:
    """Batched generation on mlx-lm: a user header in, the model's text out."""

    def __init__(self, model_path: str, batch: int):
        import mlx.core as mx
        import mlx_lm
        from mlx_lm.sample_utils import make_sampler

        self.mx = mx
        self.model, self.tokenizer = mlx_lm.load(model_path)
        if mx.default_device() == mx.cpu:  # as the runtime: float32 + BLAS there
            self.model.set_dtype(mx.float32)
        self.batch = batch
        self.sampled = make_sampler(temp=0.9, top_p=0.95)

    def prefix(self, history: Sequence[Tuple[str, str]]) -> str:
        """The template through ``history`` and an open user turn."""
        mark = "\x00USER\x00"
        text = self.tokenizer.apply_chat_template(
            messages(history) + [{"role": "user", "content": mark}], tokenize=False
        )
        return text[: text.index(mark)]

    def answer_prompt(self, history: Sequence[Tuple[str, str]], user: str) -> str:
        return self.tokenizer.apply_chat_template(
            messages(history) + [{"role": "user", "content": user}],
            tokenize=False,
            add_generation_prompt=True,
        )

    def complete(
        self, texts: List[str], max_tokens: int, sample: bool
    ) -> List[Tuple[str, bool]]:
        """Each text continued until the end of its turn: (text, finished)."""
        from mlx_lm import batch_generate

        out: List[Tuple[str, bool]] = []
        for s in range(0, len(texts), self.batch):
            chunk = texts[s : s + self.batch]
            prompts = [
                self.tokenizer.encode(t, add_special_tokens=False) for t in chunk
            ]
            kwargs = {"sampler": self.sampled} if sample else {}
            res = batch_generate(
                self.model,
                self.tokenizer,
                prompts,
                max_tokens=max_tokens,
                return_token_ids=True,
                **kwargs,
            )
            for ids in res.token_ids:  # the stop token is left out
                done = len(ids) < max_tokens  # stopped at the end of its turn
                out.append((self.tokenizer.decode(list(ids)).strip(), done))
        return out


def write_chunk(
    writer: Writer, plans: List[Plan], seen: set
) -> Tuple[List[dict], Dict]:
    """The model writes ``plans``' conversations; returns the kept records."""
    dropped = {"degenerate": 0, "duplicate": 0, "unfinished": 0}
    # 1. Passages for the categories that work on a text: a request the model
    # writes from an opener, then its own (sampled) answer to it.
    asks = [(p, o) for p in plans for o in p.passage_openers]
    if asks:
        texts = [writer.prefix([]) + o for _, o in asks]
        requests = writer.complete(texts, 32, True)
        prompts = [
            writer.answer_prompt([], f"{o} {r}".strip())
            for (_, o), (r, _) in zip(asks, requests)
        ]
        for (p, _), (t, _) in zip(asks, writer.complete(prompts, PASSAGE_TOKENS, True)):
            p.passages.append(_whole_sentences(t))
    live = list(plans)
    for turn in range(2):
        if turn == 1:  # the follow-ups, where the first turn was kept
            live = [p for p in live if p.follow_up]
        if not live:
            break
        # 2. The user turn: the opener continued by the model, sampled.
        heads = []
        for p in live:
            opener = p.opener if turn == 0 else p.follow_up
            context = ""
            if turn == 0 and p.passages:
                docs = p.passages
                if len(docs) > 1:
                    context = "".join(
                        f"Document {i + 1}:\n{d}\n\n" for i, d in enumerate(docs)
                    )
                else:
                    context = docs[0] + "\n\n"
            heads.append((context + opener, writer.prefix(p.turns) + context + opener))
        users = writer.complete([h for _, h in heads], USER_TOKENS, True)
        kept = []
        for p, (start, _), (rest, done) in zip(live, heads, users):
            user = f"{start} {rest}".strip()
            key = dedup_key(f"{p.opener} {rest}" if turn == 0 else user)
            if not done:
                dropped["unfinished"] += 1
            elif degenerate(rest, 2 if p.category == "summarize" else 4):
                dropped["degenerate"] += 1
            elif turn == 0 and key in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(key)
                if turn == 0:
                    p.key = key
                kept.append((p, user))
        # A failed follow-up keeps the conversation's first turn.
        live = [p for p, _ in kept]
        # 3. The model's own greedy answer.
        prompts = [writer.answer_prompt(p.turns, u) for p, u in kept]
        answers = writer.complete(prompts, ANSWER_TOKENS, False)
        for (p, user), (answer, done) in zip(kept, answers):
            p.turns.append((user, answer))
    records = []
    for p in plans:
        if not p.turns:
            continue
        records.append(
            {
                "messages": messages(p.turns),
                "task": "magpie",
                "id": f"magpie-{p.index}",
                "split": p.split,
                "meta": {"category": p.category, "turns": len(p.turns), "key": p.key},
            }
        )
    return records, dropped


def existing(path: Path) -> Tuple[int, set]:
    """(the next index to write, the dedup keys of what is there). Lines after
    the last chunk marker (an interrupted chunk) are cut off."""
    nxt, seen, keys, end = 0, set(), [], 0
    if not path.exists():
        return nxt, seen
    with open(path, "rb") as f:
        for line in f:
            rec = json.loads(line) if line.strip() else None
            if rec is not None and rec.get("type") == "chunk":
                nxt, end = rec["next"], f.tell()
                seen.update(keys)
                keys = []
            elif rec is not None:
                keys.append(rec["meta"]["key"])
    with open(path, "r+b") as f:
        f.truncate(end)
    return nxt, seen


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--conversations", type=int, default=2000, help="indices to plan")
    ap.add_argument("--seed", type=int, default=20261208)
    ap.add_argument("--model", default=None, help="default: the registry's model")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--chunk", type=int, default=48, help="conversations per write")
    args = ap.parse_args(argv)
    import mlx.core as mx

    from mlx_specstream.blas import ensure_openblas

    ensure_openblas()
    if args.model is None:
        from mlx_specstream import load
        from mlx_specstream.decoding.state import state_of
        from mlx_specstream.loading.registry import DEFAULT_MODEL

        args.model = str(state_of(load(DEFAULT_MODEL)[0]).path)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, seen = existing(out)
    writer = Writer(args.model, args.batch)
    for s in range(start, args.conversations, args.chunk):
        t = time.time()
        mx.random.seed(args.seed * 100003 + s)  # this chunk's sampling
        plans = [
            plan(args.seed, i)
            for i in range(s, min(s + args.chunk, args.conversations))
        ]
        records, dropped = write_chunk(writer, plans, seen)
        with open(out, "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            f.write(json.dumps({"type": "chunk", "next": s + len(plans)}) + "\n")
        print(
            f"[{s + len(plans)}/{args.conversations}] kept {len(records)} "
            f"dropped {dropped} in {time.time() - t:.0f} s",
            flush=True,
        )


def read(path: Path, split: Optional[str] = None) -> Iterator[dict]:
    """The conversations of a file written by ``main`` (chunk markers skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec.get("type") != "chunk" and (
                    split is None or rec["split"] == split
                ):
                    yield rec


if __name__ == "__main__":
    main(sys.argv[1:])
