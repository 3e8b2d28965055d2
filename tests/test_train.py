# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Stream training: data masks, the efficient lossless path, resume, shared mode, DDP."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from helpers_torch import (  # noqa: E402
    tiny_hf_llama,
    tiny_hf_qwen2,
    write_random_streams,
)
from mlx_specstream.train import lossless  # noqa: E402
from mlx_specstream.train.examples import Example, encode, load_examples  # noqa: E402
from mlx_specstream.train.reference import StreamingReference  # noqa: E402
from mlx_specstream.train.trainer import build_parser, main, train  # noqa: E402

from mlx_specstream.format import SETTINGS_FILE, STREAMS_FILE, StreamArgs  # noqa: E402

pytestmark = pytest.mark.torch
WORDS = "the cat sat on a mat and then it ran to the tree".split()
SMALL = (
    "--num-streams 3 --num-stream-layers 2 --batch-size 4 --anchors 4 --insertion-rank 4"
    " --prune-rank 4 --eval-every 2 --save-every 2 --threads 1"
).split()


def _records(n: int, seed: int):
    rng = np.random.default_rng(seed)
    say = lambda k: " ".join(rng.choice(WORDS, k))  # noqa: E731
    for i in range(n):
        if i % 2:
            yield {"prompt": say(4), "completion": say(8)}
        else:
            yield {
                "messages": [
                    {"role": "user", "content": say(3)},
                    {"role": "assistant", "content": say(6)},
                    {"role": "user", "content": "more"},
                    {"role": "assistant", "content": say(5)},
                ]
            }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    model = tiny_hf_llama(root, num_hidden_layers=4)
    for name, n, seed in (("train", 16, 0), ("valid", 4, 1)):
        (root / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in _records(n, seed))
        )
    return root, model


def _args(setup, out, *extra):
    root, model = setup
    return [
        "--model",
        str(model),
        "--train",
        str(root / "train.jsonl"),
        "--valid",
        str(root / "valid.jsonl"),
        "--out",
        str(out),
        *SMALL,
        *extra,
    ]


def test_completion_mask_covers_assistant_turns_only(setup):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(setup[1]))
    rec = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": "more"},
            {"role": "assistant", "content": "the mat"},
        ]
    }
    ex = encode(tok, rec, 512)
    learned = tok.decode(ex.ids[ex.target])
    assert learned == "a cat<|im_end|>\nthe mat<|im_end|>\n"
    ex = encode(tok, {"prompt": "hi", "completion": "a cat"}, 512)
    assert tok.decode(ex.ids[ex.target]) == "a cat<|im_end|>\n"
    assert not encode(tok, {"prompt": "hi", "completion": "a cat"}, 4).target.any()
    # distilled records: the exact ids are used, end-of-turn re-added after "stop"
    rec = {
        "prompt": "hi",
        "completion": "x",
        "prompt_tokens": [1, 5, 6],
        "completion_tokens": [7, 8],
        "finish_reason": "stop",
    }
    ex = encode(tok, rec, 512)
    assert ex.ids.tolist() == [1, 5, 6, 7, 8, tok.eos_token_id]
    assert ex.target.tolist() == [False] * 3 + [True] * 3
    ex = encode(tok, dict(rec, finish_reason="length"), 512)
    assert ex.ids.tolist() == [1, 5, 6, 7, 8]


def test_efficient_path_equals_reference(tmp_path):
    path = tiny_hf_qwen2(tmp_path)
    write_random_streams(
        path,
        StreamArgs(
            num_streams=3,
            num_stream_layers=2,
            stream_adapter_rank=4,
            insertion_rank=4,
            prune_rank=4,
        ),
        scale=0.2,
    )
    ref = StreamingReference.from_pretrained(path).eval()
    rng = np.random.default_rng(0)
    exs = [Example(rng.integers(3, 96, n), np.arange(n) >= 3) for n in (15, 9)]
    caches = [lossless.build_cache(ref, e, 8, torch.float32) for e in exs]
    anchors = [np.array([2, 6, 12]), np.array([3, 5])]
    with torch.no_grad():
        fast = lossless.efficient_stream_logits(ref, caches, anchors)
        for r, e in enumerate(exs):
            _, full = ref(torch.as_tensor(e.ids)[None])
            diff = (full[0, anchors[r]] - fast[r, : len(anchors[r])]).abs().max()
            assert diff < 1e-4


@pytest.mark.parametrize("target", ["soft", "hard"])
def test_lossless_trains_only_streams(setup, tmp_path, target):
    summary, ref = train(
        build_parser().parse_args(
            _args(setup, tmp_path, "--steps", "3", "--target", target)
        )
    )
    fresh = StreamingReference.from_pretrained(setup[1], ref.args).eval()
    for k, v in fresh.hf.state_dict().items():
        assert torch.equal(v, ref.hf.state_dict()[k]), k
    fresh.load_streams(tmp_path)
    assert (
        fresh.streams_state_dict()["prune.b"].abs().sum() > 0
    )  # b starts at 0: it learned
    assert fresh.streams_state_dict()["layers.3.mlp.down_proj.lora_b"].abs().sum() > 0
    ids = torch.randint(3, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        main_logits, _ = fresh(ids)
        assert torch.equal(main_logits, fresh.hf(ids).logits)
    saved = json.loads((tmp_path / "train_summary.json").read_text())
    assert (
        saved["steps_run"] == 3
        and saved["trainable_params"] == summary["trainable_params"] > 0
    )
    for k in (
        "wall_time_s",
        "seq_tokens_per_s",
        "peak_rss_mb",
        "val_tokens_per_pass",
        "val_stream_acc",
    ):
        assert k in saved
    assert (
        len(saved["val_stream_acc"]) == 3 and 1.0 <= saved["val_tokens_per_pass"] <= 4.0
    )


def test_resume_matches_uninterrupted_run(setup, tmp_path):
    from safetensors.torch import load_file

    train(build_parser().parse_args(_args(setup, tmp_path / "a", "--steps", "4")))
    train(
        build_parser().parse_args(
            _args(setup, tmp_path / "b", "--steps", "4", "--run-steps", "2")
        )
    )
    half = load_file(str(tmp_path / "b" / STREAMS_FILE))
    summary, _ = train(
        build_parser().parse_args(
            _args(setup, tmp_path / "b", "--steps", "4", "--resume")
        )
    )
    assert summary["steps_run"] == 2 and summary["last_step"] == 4
    a, b = (load_file(str(tmp_path / d / STREAMS_FILE)) for d in ("a", "b"))
    assert not all(torch.equal(half[k], b[k]) for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_shared_mode_saves_peft_adapter(setup, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    extra = ("--mode", "shared", "--steps", "2", "--lora-rank", "4", "--lr", "1e-2")
    summary, ref = train(build_parser().parse_args(_args(setup, tmp_path, *extra)))
    assert summary["val_main_loss"] > 0
    assert json.loads((tmp_path / SETTINGS_FILE).read_text())["mode"] == "shared"
    base = AutoModelForCausalLM.from_pretrained(str(setup[1]), dtype=torch.float32)
    merged = (
        PeftModel.from_pretrained(base, str(tmp_path / "adapter"))
        .merge_and_unload()
        .eval()
    )
    ids = torch.randint(3, 96, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained_main, _ = ref.eval()(ids)
        assert torch.allclose(merged(ids).logits, trained_main, atol=1e-4)
        assert not torch.allclose(
            base.__class__.from_pretrained(str(setup[1]))(ids).logits,
            trained_main,
            atol=1e-4,
        )


def test_shared_stream_loss_weight_zero_is_plain_lora(setup, tmp_path):
    from safetensors.torch import load_file

    extra = ("--mode", "shared", "--steps", "2", "--lora-rank", "4", "--lr", "1e-2")
    for name, w in (("streams", "0.1"), ("plain", "0")):
        argv = _args(setup, tmp_path / name, *extra, "--stream-loss-weight", w)
        train(build_parser().parse_args(argv))
    lora = {
        d: load_file(str(tmp_path / d / "adapter" / "adapter_model.safetensors"))
        for d in ("streams", "plain")
    }
    assert lora["streams"].keys() == lora["plain"].keys()
    # the stream loss reaches the shared LoRA, so the two fine-tunes differ
    assert not all(torch.equal(v, lora["plain"][k]) for k, v in lora["streams"].items())
    streams = {d: load_file(str(tmp_path / d / STREAMS_FILE)) for d in lora}
    for k in (
        "stream_embed",
        "insert.b",
    ):  # zero at init; only the stream loss moves them
        assert streams["streams"][k].abs().sum() > 0, k
        assert not streams["plain"][k].any(), k
    args = json.loads((tmp_path / "plain" / "train_summary.json").read_text())["args"]
    assert args["stream_loss_weight"] == 0.0


WORKER = """
import sys, torch, torch.distributed as dist
from mlx_specstream.train.trainer import build_parser, train
summary, ref = train(build_parser().parse_args(sys.argv[2:]))
torch.save({k: v.detach() for k, v in ref.streams_state_dict().items()},
           f"{sys.argv[1]}/rank{dist.get_rank()}.pt")
"""


def test_ddp_two_processes(setup, tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(tmp_path / "worker.py"),
        str(tmp_path),
        *_args(setup, out, "--steps", "3", "--batch-size", "2"),
    ]
    repo = Path(__file__).resolve().parents[1]
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    assert json.loads((out / "train_summary.json").read_text())["world_size"] == 2
    ref = StreamingReference.from_pretrained(
        setup[1], StreamArgs(num_streams=3, num_stream_layers=2)
    )
    ref = StreamingReference(ref.hf, json_args(out))
    ref.load_streams(out)
    for k, v in ref.streams_state_dict().items():
        assert torch.equal(v, r0[k])


def json_args(out: Path) -> StreamArgs:
    return StreamArgs.from_dict(json.loads((out / SETTINGS_FILE).read_text()))


def _fails(argv) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1


def test_bad_input(setup, tmp_path, capsys):
    root = setup[0]
    _fails(_args(setup, tmp_path / "o") + ["--train", str(root / "missing.jsonl")])
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": \n'
    )
    _fails(_args(setup, tmp_path / "o") + ["--train", str(bad)])
    err = capsys.readouterr().err
    assert f"error: {bad}:3: invalid JSON" in err and "Traceback" not in err
    bad.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    _fails(_args(setup, tmp_path / "o") + ["--train", str(bad)])
    assert (
        f"{bad}:2: expected string 'prompt' and 'completion'" in capsys.readouterr().err
    )
    _fails(_args(setup, tmp_path / "o") + ["--model", str(tmp_path)])
    assert "not a model directory" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError):
        load_examples(tmp_path / "none.jsonl", None, 10)


def test_refuses_to_overwrite_checkpoint(setup, tmp_path, capsys):
    main(_args(setup, tmp_path, "--steps", "1", "--eval-every", "0"))
    _fails(_args(setup, tmp_path, "--steps", "1"))
    assert "holds a checkpoint; pass --resume" in capsys.readouterr().err


def test_init_streams_starts_from_trained_streams(setup, tmp_path, capsys):
    from safetensors.torch import load_file

    train(build_parser().parse_args(_args(setup, tmp_path / "a", "--steps", "3")))
    # lr 0: the run changes nothing, so what it saves is what it started from.
    train(
        build_parser().parse_args(
            _args(
                setup,
                tmp_path / "b",
                "--steps",
                "1",
                "--lr",
                "0",
                "--init-streams",
                str(tmp_path / "a"),
            )
        )
    )
    a, b = (load_file(str(tmp_path / d / STREAMS_FILE)) for d in ("a", "b"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Streams that carry a draft vocabulary and corpus (as the shipped ones do)
    # start a run too.
    from safetensors.torch import save_file

    save_file({**a, "draft_vocab": torch.arange(5, dtype=torch.int32),
               "draft_corpus": torch.tensor([1, 2, 3, -1], dtype=torch.int32)},
              str(tmp_path / "a" / STREAMS_FILE))  # fmt: skip
    args = _args(setup, tmp_path / "d", "--steps", "1", "--lr", "0")
    train(build_parser().parse_args(args + ["--init-streams", str(tmp_path / "a")]))
    d = load_file(str(tmp_path / "d" / STREAMS_FILE))
    assert d.keys() == b.keys() and all(torch.equal(d[k], b[k]) for k in d)
    other = _args(setup, tmp_path / "c", "--steps", "1", "--num-streams", "2")
    _fails(other + ["--init-streams", str(tmp_path / "a")])
    assert "--init-streams:" in capsys.readouterr().err
