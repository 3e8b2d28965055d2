# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""The key invariant: greedy Speculative Streaming output equals plain greedy output."""

from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import mlx.core as mx
import numpy as np
import pytest
from conftest import TINY, emitted, tiny_hf_tokenizer, tiny_model, wrap

from mlx_specstream.decoding.decoder import STREAM_PASSES, speculative_generate_step
from mlx_specstream.decoding.drafters import StreamDrafter, StreamTopK
from mlx_specstream.decoding.tree import Tree, TreeShape
from mlx_specstream.format import StreamArgs
from mlx_specstream.generate import generate, stream_generate
from mlx_specstream.models import streaming
from mlx_specstream.models.cache import make_prompt_cache
from mlx_specstream.models.fast_ops import use_decode_path

PROMPT = [5, 17, 33, 2, 61, 8, 40]


def run(model, tokenizer, prompt=PROMPT, **kw) -> tuple:
    rs = list(stream_generate(model, tokenizer, prompt, **kw))
    return [t for r in rs for t in emitted(r)], rs


def per_pass(rs) -> List[int]:
    """Tokens output by each forward pass (responses come one per token)."""
    counts = Counter(r.forward_calls for r in rs if emitted(r))
    return [counts[c] for c in sorted(counts)]


SHAPES = [
    dict(),  # GQA, untied
    dict(tie_word_embeddings=True, num_key_value_heads=4),
    dict(model_type="qwen2", num_key_value_heads=1),
    dict(model_type="mistral", num_hidden_layers=3, head_dim=24),
    dict(model_type="qwen3", head_dim=24, tie_word_embeddings=True),
    # Gemma 3: sliding window 8 (layers 0, 2; layer 2 is a stream layer) past which
    # the 48 generated tokens run, local RoPE base, linear RoPE scaling on globals.
    dict(
        model_type="gemma3_text",
        head_dim=24,
        query_pre_attn_scalar=24,
        sliding_window=8,
        sliding_window_pattern=2,
        rope_local_base_freq=100.0,
        rope_scaling={"rope_type": "linear", "factor": 4.0},
    ),
    dict(
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    ),
    # Phi-4-mini: fused projections, RoPE on 12 of 16 dims per head, LongRoPE, tied.
    dict(
        model_type="phi3",
        partial_rotary_factor=0.75,
        tie_word_embeddings=True,
        original_max_position_embeddings=16,
        rope_scaling={
            "type": "longrope",
            "short_factor": [1.0 + 0.1 * i for i in range(6)],
            "long_factor": [1.5 + 0.4 * i for i in range(6)],
        },
    ),
    # Phi-3-mini: full rotation, untied; sliding window 12, which the 48 generated
    # tokens run past.
    dict(model_type="phi3", sliding_window=12),
]
STREAMS = [
    StreamArgs(num_streams=3, num_stream_layers=2),
    StreamArgs(
        num_streams=4, num_stream_layers=1, stream_adapter_rank=4, insertion_rank=2
    ),
    StreamArgs(
        num_streams=2,
        num_stream_layers=3,
        stream_adapter_rank=2,
        prune_rank=4,
        stream_adapter_modules=["self_attn.q_proj", "mlp.down_proj"],
    ),
]
TREES = [
    TreeShape(),
    TreeShape(budget=4),
    TreeShape("cartesian", (2, 2, 1)),
    TreeShape("cartesian", (1, 1, 1, 1)),
]


V = TINY["vocab_size"]
# Draft vocabularies the matrix turns through: the whole vocabulary, or k random ids.
VOCABS = (None, 4, 24, V)
DECODE_PATHS = ("cpu", "gpu")


def subset(seed: int, k: int, exclude: Sequence[int] = ()) -> np.ndarray:
    """``k`` random distinct ids of the tiny vocabulary, none of ``exclude``."""
    allowed = np.setdiff1d(np.arange(V), np.asarray(exclude, int))
    return np.random.default_rng(seed).permutation(allowed)[:k]


@dataclass
class Recording:
    """A stream drafter that keeps every candidate token it was given."""

    inner: StreamDrafter
    seen: List[int] = field(default_factory=list)

    @property
    def top_k(self) -> int:
        return self.inner.top_k

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree:
        if streams is not None:
            self.seen += streams.tokens.ravel().tolist()
        return self.inner.draft(root, streams, history)


@pytest.mark.parametrize(
    "shape",
    range(len(SHAPES)),
    ids=[f"{i}-{s.get('model_type', 'llama')}" for i, s in enumerate(SHAPES)],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_lossless_matrix(tokenizer, shape, seed):
    """The losslessness matrix: every family x every tree x every stream pass, greedy
    speculative output equal to plain greedy output token for token.

    Each seed gives the family its own random model and one of the three stream
    layouts. Along the trees (index i) three settings turn with j = seed + i: the
    stream pass (j mod 3, so the three seeds give each tree each pass), the decode
    path (j mod 2: both per tree) and the draft vocabulary (none, or 4, 24 or all 96
    ids; three of the four per tree and each three times per family). The reference
    is plain decoding on the cpu path; once per family the gpu path's plain output is
    checked to be the same.
    """
    model = tiny_model(seed, STREAMS[seed % len(STREAMS)], **SHAPES[shape])
    with use_decode_path("cpu"):
        plain, prs = run(model, tokenizer, max_tokens=48, speculative=False)
    assert len(plain) >= 1 and not any(r.speculative for r in prs)
    if seed == 0:
        with use_decode_path("gpu"):
            assert run(model, tokenizer, max_tokens=48, speculative=False)[0] == plain
    for i, tree in enumerate(TREES):
        j = seed + i
        pass_kind = STREAM_PASSES[j % len(STREAM_PASSES)]
        path = DECODE_PATHS[j % len(DECODE_PATHS)]
        k = VOCABS[(j + shape) % len(VOCABS)]
        where = (tree, pass_kind, path, k)
        with use_decode_path(path):
            if k is None:
                model.set_draft_vocab(None)
                spec, rs = run(
                    model, tokenizer, max_tokens=48, tree=tree, stream_pass=pass_kind
                )
            else:
                model.set_draft_vocab(subset(shape, k))
                drafter = Recording(StreamDrafter(tree))
                spec, rs = run(
                    model,
                    tokenizer,
                    max_tokens=48,
                    drafter=drafter,
                    stream_pass=pass_kind,
                )
                # Drafts come from the subset only.
                assert drafter.seen, where
                assert set(drafter.seen) <= set(model.draft_vocab.tolist()), where
        assert spec == plain, where
        assert all(r.speculative for r in rs), where
        # EOS, when reached, is produced by a pass but not output.
        assert rs[-1].forward_calls <= len(spec) + 1, where


def test_responses_say_whether_the_call_speculates(tokenizer):
    """Without a tree (and no calibration: a tiny model has none) decoding is plain
    and every response says so; a tree, prompt lookup or a drafter speculates."""
    model = tiny_model(0)
    kinds = {
        "default": dict(),
        "plain": dict(speculative=False),
        "tree": dict(tree=TreeShape(budget=8)),
        "lookup": dict(prompt_lookup=True),
        "drafter": dict(drafter=StreamDrafter(TreeShape("cartesian", (2, 1)))),
    }
    out = {}
    for name, kw in kinds.items():
        out[name], rs = run(model, tokenizer, max_tokens=12, **kw)
        assert rs and {r.speculative for r in rs} == {name not in ("default", "plain")}
    assert all(tokens == out["plain"] for tokens in out.values())


@pytest.mark.parametrize("threshold", [0.01, 0.2, 0.9])
def test_greedy_lossless_with_pruning(tokenizer, threshold):
    args = StreamArgs(
        num_streams=3, num_stream_layers=2, prune_rank=4, prune_threshold=threshold
    )
    model = tiny_model(3, args)
    plain, _ = run(model, tokenizer, max_tokens=40, speculative=False)
    spec, rs = run(
        model, tokenizer, max_tokens=40, tree=TreeShape("cartesian", (3, 2, 1))
    )
    assert spec == plain
    if threshold == 0.9:  # almost everything is pruned
        assert min(r.tree_size for r in rs[1:]) < TreeShape("cartesian", (3, 2, 1)).size


@dataclass
class OracleDrafter:
    """Drafts the true continuation (depth ``depth``) plus one wrong sibling per level."""

    truth: List[int]
    prompt_len: int
    depth: int
    top_k: int = 0

    def draft(
        self, root: int, streams: Optional[StreamTopK], history: Sequence[int]
    ) -> Tree:
        n = len(history) - self.prompt_len  # tokens emitted so far, root included
        nxt = self.truth[n : n + self.depth]
        wrong = [(t + 1) % 96 for t in nxt]
        paths = [tuple(nxt)] + [
            tuple(nxt[:i]) + (wrong[i],) for i in range(len(nxt)) if wrong[i] != nxt[i]
        ]
        return Tree.from_paths(root, paths)


@pytest.mark.parametrize("depth", [1, 3, 6])
@pytest.mark.parametrize("seed", [0, 4])
def test_oracle_draft_accepts_many_tokens_per_pass(depth, seed):
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])  # no early stop
    model = tiny_model(seed, **SHAPES[seed % len(SHAPES)])
    plain, _ = run(model, tokenizer, max_tokens=40, speculative=False)
    drafter = OracleDrafter(plain, len(PROMPT), depth)
    spec, rs = run(model, tokenizer, max_tokens=40, drafter=drafter)
    assert spec == plain
    # Prefill issues one token; every later pass accepts the whole oracle chain.
    expected = [1] + [depth + 1] * ((len(plain) - 1) // (depth + 1))
    if (len(plain) - 1) % (depth + 1):
        expected.append((len(plain) - 1) % (depth + 1))
    assert per_pass(rs) == expected


@dataclass
class RecordingStreams(StreamDrafter):
    """A stream tree plus the true next token as a leaf, the first child in even
    trees and the last in odd ones (so the accepted path ends both inside and
    outside the likely anchors); records every tree."""

    truth: List[int] = None
    prompt_len: int = 0
    trees: List[Tree] = None

    def draft(self, root, streams, history) -> Tree:
        n = len(history) - self.prompt_len
        self.trees = self.trees or []
        truth = [tuple(self.truth[n : n + 1])]
        odd = len(self.trees) % 2
        paths = self.paths(streams) + truth if odd else truth + self.paths(streams)
        tree = Tree.from_paths(root, paths)
        self.trees.append(tree)
        return tree


@pytest.mark.parametrize("seed", [0, 3])
def test_likely_stream_pass_drafts_as_the_others(tokenizer, seed, monkeypatch):
    """In-pass stream rows of the likely anchors give the drafts the accepted-node
    pass gives, and a node outside them falls back to that pass."""
    model = tiny_model(seed, STREAMS[seed % len(STREAMS)])
    plain, _ = run(model, tokenizer, max_tokens=40, speculative=False)
    after_pass = streaming.node_streams
    calls = []
    monkeypatch.setattr(
        streaming, "node_streams", lambda *a: calls.append(1) or after_pass(*a)
    )
    trees, fallbacks = {}, {}
    for sp in STREAM_PASSES:
        calls.clear()
        drafter = RecordingStreams(
            TreeShape(budget=8), truth=plain, prompt_len=len(PROMPT)
        )
        out, _ = run(model, tokenizer, max_tokens=40, drafter=drafter, stream_pass=sp)
        assert out == plain, sp
        trees[sp], fallbacks[sp] = drafter.trees, len(calls)
    assert trees["likely"] == trees["accepted"] == trees["tree"]
    # "accepted" runs the extra pass after every pass (the last one's is not drafted).
    assert fallbacks["tree"] == 0
    assert fallbacks["accepted"] - len(trees["accepted"]) in (0, 1)
    assert 0 < fallbacks["likely"] < len(trees["likely"])


def test_likely_anchors_are_the_heaviest_nodes():
    #      0
    #    1   2        subtree sizes 7; 2, 4; 1, 2, 1; 1
    #   3   4 5
    #       6
    tree = Tree((0, 1, 2, 3, 4, 5, 6), (-1, 0, 0, 1, 2, 2, 4))
    assert tree.subtree_sizes.tolist() == [7, 2, 4, 1, 2, 1, 1]
    assert tree.likely_anchors(1) == [0]
    assert tree.likely_anchors(2) == [0, 2]
    assert tree.likely_anchors(4) == [0, 1, 2, 4]  # 1 and 4 tie: node order
    assert tree.likely_anchors(6) == [0, 1, 2, 3, 4, 5]
    assert tree.likely_anchors(9) == list(range(7))
    assert Tree((7,), (-1,)).likely_anchors(3) == [0]


def test_cache_offset_equals_tokens_kept():
    model = tiny_model(5)
    cache = make_prompt_cache(model)
    steps = speculative_generate_step(
        PROMPT, model, StreamDrafter(TreeShape(budget=8)), prompt_cache=cache
    )
    emitted = 0
    for _, step in zip(range(12), steps):
        emitted += len(step.tokens)
        # Every emitted token but the newest correction token is in every layer's cache.
        assert all(c.offset == len(PROMPT) + emitted - 1 for c in cache)


def test_eos_inside_accepted_path(tokenizer):
    model = tiny_model(1)
    plain, _ = run(model, tokenizer, max_tokens=30, speculative=False)
    eos = plain[9]
    stop_tok = wrap(tiny_hf_tokenizer(), eos_token_ids=[eos])
    plain_stop, prs = run(model, stop_tok, max_tokens=30, speculative=False)
    assert plain_stop == plain[: plain.index(eos)] and prs[-1].finish_reason == "stop"
    spec, rs = run(
        model, stop_tok, max_tokens=30, drafter=OracleDrafter(plain, len(PROMPT), 5)
    )
    assert spec == plain_stop and rs[-1].finish_reason == "stop"


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 13])
def test_max_tokens_exact(max_tokens):
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(2)
    plain, _ = run(model, tokenizer, max_tokens=40, speculative=False)
    for kw in (
        dict(tree=TreeShape(budget=8)),
        dict(drafter=OracleDrafter(plain, len(PROMPT), 4)),
    ):
        spec, rs = run(model, tokenizer, max_tokens=max_tokens, **kw)
        assert spec == plain[:max_tokens] and all(r.speculative for r in rs)
        assert (
            rs[-1].generation_tokens == max_tokens and rs[-1].finish_reason == "length"
        )


def test_string_prompt_and_generate(tokenizer):
    model = tiny_model(0)
    text = generate(model, tokenizer, "t5 t17 t33", max_tokens=10, tree=TreeShape())
    plain = generate(model, tokenizer, [5, 17, 33], max_tokens=10, speculative=False)
    assert text == plain and text.strip().startswith("t")


def test_float16_model_decodes(tokenizer):
    model = tiny_model(0)
    model.set_dtype(mx.float16)
    plain, _ = run(model, tokenizer, max_tokens=12, speculative=False)
    spec, rs = run(model, tokenizer, max_tokens=12, tree=TreeShape(budget=8))
    assert len(spec) == 12 and spec[:4] == plain[:4]
    assert all(r.speculative for r in rs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompt=[]), "prompt is empty"),
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt=[1] * 500, max_tokens=20), "exceeds the model's context length"),
        (dict(prompt=[1, 999]), "outside the vocabulary"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(temp=-1.0), "temp"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_p=-0.1), "top_p"),
        (dict(temp=float("nan")), "temp"),
        (dict(min_p=2.0), "min_p"),
        (dict(min_tokens_to_keep=0), "min_tokens_to_keep"),
        (dict(max_tokens=-3), "max_tokens"),
        (dict(kv_bits=4), "kv_bits"),
        (dict(draft_model=object()), "draft_model"),
        (dict(max_kv_size=64), "max_kv_size"),
        (dict(top_k=-2), "top_k"),
        (dict(stream_pass="both"), "stream_pass"),
        (dict(prune_threshold=1.5), "prune_threshold"),
    ],
)
def test_bad_input_gives_clear_errors(tokenizer, kwargs, message):
    model = tiny_model(0)
    kwargs = {"prompt": PROMPT, "max_tokens": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        list(stream_generate(model, tokenizer, **kwargs))


def test_prompt_lookup_drafts_copy_the_prompt_and_stay_lossless():
    from mlx_specstream.decoding.drafters import PromptLookupDrafter

    lookup = PromptLookupDrafter(max_ngram=2, length=3)
    assert lookup.paths([1, 2, 3, 4, 5, 9, 2, 3]) == [(4, 5, 9)]
    assert lookup.paths([1, 2, 3, 4, 7, 3]) == [(4, 7, 3)]  # falls back to n = 1
    assert lookup.paths([1, 2, 3]) == []
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    model = tiny_model(6)
    prompt = PROMPT * 3  # repetitive input: lookup has something to copy
    plain, _ = run(model, tokenizer, prompt, max_tokens=40, speculative=False)
    spec, rs = run(model, tokenizer, prompt, max_tokens=40, prompt_lookup=True)
    assert spec == plain


@pytest.mark.parametrize("prefill_step_size", [512, 5])
def test_gemma3_prompt_longer_than_the_window(prefill_step_size):
    """A 20-token prompt (window 8), prefilled whole or in chunks of 5: speculative
    output equals plain, and the window changes the output (the test has power)."""
    tokenizer = wrap(tiny_hf_tokenizer(), eos_token_ids=[])
    gemma = next(s for s in SHAPES if s.get("model_type") == "gemma3_text")
    prompt = [(11 * i + 4) % 96 for i in range(20)]
    kw = dict(max_tokens=30, prefill_step_size=prefill_step_size)
    model = tiny_model(7, STREAMS[1], **gemma)
    plain, _ = run(model, tokenizer, prompt, speculative=False, **kw)
    for tree in TREES[:3]:
        spec, _ = run(model, tokenizer, prompt, tree=tree, **kw)
        assert spec == plain, tree
    unwindowed = tiny_model(7, STREAMS[1], **dict(gemma, sliding_window=512))
    assert run(unwindowed, tokenizer, prompt, speculative=False, **kw)[0] != plain
