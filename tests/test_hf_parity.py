# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Greedy decoding of a Hugging Face directory, plain and speculative (random streams
beside it, an explicit tree), equals transformers' generate."""

import pytest

torch = pytest.importorskip("torch")

from conftest import emitted
from helpers_torch import HF_FAMILIES, write_random_streams  # noqa: E402

from mlx_specstream.decoding.tree import TreeShape  # noqa: E402
from mlx_specstream.generate import stream_generate  # noqa: E402
from mlx_specstream.utils import load  # noqa: E402

PROMPT = [5, 9, 14, 20, 31]


@pytest.mark.torch
@pytest.mark.parametrize("family", list(HF_FAMILIES))
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_and_speculative_greedy_equal_transformers(tmp_path, family, seed):
    from transformers import AutoModelForCausalLM

    path = HF_FAMILIES[family](tmp_path, seed=seed)
    # Nonzero streams: without them (and with no calibration) decoding is plain even
    # with a tree.
    write_random_streams(path, seed=seed)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.generate(
            torch.tensor([PROMPT]),
            max_new_tokens=24,
            do_sample=False,
            # No EOS (min_new_tokens would suppress its logit, which we do not).
            eos_token_id=None,
            pad_token_id=0,
        )[0, len(PROMPT) :].tolist()
    model, tokenizer = load(path)
    tokenizer.eos_token_ids = []  # compare full length, as min_new_tokens does
    for speculative in (False, True):
        rs = list(
            stream_generate(
                model,
                tokenizer,
                PROMPT,
                max_tokens=24,
                speculative=speculative,
                tree=TreeShape(budget=8),
            )
        )
        assert all(r.speculative is speculative for r in rs)
        assert [t for r in rs for t in emitted(r)] == ref, speculative
