# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Synthetic task sets (mlx_specstream.train.datasets) and self-distillation on a tiny random model."""

import json
import re
import sqlite3
import string

import pytest

pytest.importorskip("sqlglot")

from mlx_specstream.train.datasets import (  # noqa: E402
    SPLITS,
    chat,
    dialogue,
    instructions,
    make,
    mr2text,
    sql,
)

GENERATORS = {
    "sql": sql.generate,
    "mr2text": mr2text.generate,
    "dialogue": dialogue.generate,
    "instructions": instructions.generate,
    "chat": chat.generate,
}
SIZES = {"train": 120, "valid": 30, "test": 30}


@pytest.fixture(scope="module")
def sets():
    return {
        (task, split): gen(split, SIZES[split], seed=3)
        for task, gen in GENERATORS.items()
        for split in SPLITS
    }


@pytest.mark.parametrize("task", list(GENERATORS))
def test_deterministic_under_seed(task):
    gen = GENERATORS[task]
    a, b = gen("valid", 25, seed=7), gen("valid", 25, seed=7)
    assert a == b
    assert [x["id"] for x in gen("valid", 25, seed=8)] != [x["id"] for x in a]


def test_make_datasets_byte_identical(tmp_path):
    sizes = {"train": 8, "valid": 3, "test": 3}
    p1 = make.make_datasets(str(tmp_path / "a"), seed=1, sizes=sizes)
    p2 = make.make_datasets(str(tmp_path / "b"), seed=1, sizes=sizes)
    assert len(p1) == len(make.TASKS) * len(SPLITS)
    for name in p1:
        assert p1[name].read_bytes() == p2[name].read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp"))  # no temp file left behind


@pytest.mark.parametrize("task", list(GENERATORS))
def test_splits_disjoint(sets, task):
    keys = {s: {x["meta"]["key"] for x in sets[task, s]} for s in SPLITS}
    prompts = {s: {x["prompt"] for x in sets[task, s]} for s in SPLITS}
    for s in SPLITS:
        assert len(keys[s]) == SIZES[s]  # distinct within a split
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not keys[a] & keys[b]
            assert not prompts[a] & prompts[b]


def test_entities_disjoint(sets):
    tables = {s: {x["meta"]["table"] for x in sets["sql", s]} for s in SPLITS}
    names = {
        s: {x["meta"]["slots"]["name"] for x in sets["mr2text", s]} for s in SPLITS
    }
    for pools in (tables, names):
        assert not pools["train"] & pools["test"]
        assert not pools["train"] & pools["valid"]
        assert not pools["valid"] & pools["test"]


def test_every_sql_completion_executes(sets):
    for split in SPLITS:
        for x in sets["sql", split]:
            meta = x["meta"]
            assert x["completion"].startswith("SELECT")
            assert meta["schema"] in x["prompt"] and meta["question"] in x["prompt"]
            conn = sqlite3.connect(":memory:")
            conn.execute(meta["schema"])
            marks = ", ".join("?" * len(meta["rows"][0]))
            conn.executemany(
                f"INSERT INTO {meta['table']} VALUES ({marks})", meta["rows"]
            )
            assert conn.execute(x["completion"]).fetchall()
            conn.close()
            assert sql.execution_match(
                x["completion"], x["completion"], meta["schema"], meta["rows"]
            )
            variant = re.sub(
                r"\b(SELECT|FROM|WHERE|AND|ORDER BY|GROUP BY|LIMIT)\b",
                lambda m: m.group(0).lower() + " ",
                x["completion"],
            )
            assert sql.exact_match(variant + ";", x["completion"])


def test_sql_covers_operators(sets):
    text = " ".join(x["completion"] for s in SPLITS for x in sets["sql", s])
    for op in (
        "WHERE",
        " AND ",
        "ORDER BY",
        "COUNT(",
        "MAX(",
        "MIN(",
        "AVG(",
        "GROUP BY",
        "LIMIT",
    ):
        assert op in text, op


PETS = "CREATE TABLE pets (name TEXT, species TEXT, age INTEGER)"
ROWS = [["Rex", "dog", 5], ["Tom", "cat", 2], ["Kiki", "parrot", 9], ["Bo", "dog", 1]]


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        (
            "SELECT name FROM pets WHERE 3 < age",
            "SELECT name FROM pets WHERE age > 3",
            True,
        ),
        (
            "select NAME from PETS where age>3;",
            "SELECT name FROM pets WHERE age > 3",
            True,
        ),
        (
            "SELECT name FROM pets WHERE age < 3",
            "SELECT name FROM pets WHERE age > 3",
            False,
        ),
        (
            "SELECT species FROM pets WHERE age > 3",
            "SELECT name FROM pets WHERE age > 3",
            False,
        ),
        (
            "SELECT COUNT(*) FROM pets",
            "SELECT COUNT(*) FROM pets WHERE species = 'dog'",
            False,
        ),
        ("SELEC name FRM pets", "SELECT name FROM pets", False),
        ("SELECT name FROM pets; DROP TABLE pets", "SELECT name FROM pets", False),
        (
            "SELECT name FROM pets ORDER BY age",
            "SELECT name FROM pets ORDER BY age DESC",
            False,
        ),
        ("SELECT name FROM pets ORDER BY age", "SELECT name FROM pets", True),
        ("SELECT AVG(age) FROM pets", "SELECT SUM(age) / 4.0 FROM pets", True),
    ],
)
def test_execution_match(pred, gold, expected):
    assert sql.execution_match(pred, gold, PETS, ROWS) is expected


def test_exact_match_and_extract():
    gold = "SELECT name FROM pets WHERE age > 3"
    assert sql.exact_match("select  name from PETS where age > 3;", gold)
    assert not sql.exact_match("SELECT name FROM pets WHERE age > 4", gold)
    assert not sql.exact_match("not sql at all (", gold)
    answer = (
        "Here is the query:\n```sql\nSELECT name FROM pets WHERE age > 3;\n```\nDone."
    )
    assert sql.extract_sql(answer) == gold
    assert (
        sql.extract_sql("Sure! SELECT name FROM pets WHERE age > 3\n\nIt works.")
        == gold
    )


def test_mr_completions_mention_every_slot(sets):
    for split in SPLITS:
        for x in sets["mr2text", split]:
            slots, text = x["meta"]["slots"], x["completion"]
            assert x["meta"]["mr"] in x["prompt"]
            assert x["meta"]["mr"] == mr2text.format_mr(slots)
            assert 1 <= len(re.findall(r"\.(\s|$)", text)) <= 2  # one or two sentences
            for slot, value in slots.items():
                if slot == "familyFriendly":
                    assert re.search(r"family|kid|children", text)
                    assert (value == "no") == bool(re.search(r"\bnot\b", text))
                else:
                    assert value.lower() in text.lower(), (slot, value, text)


def test_dialogues_shape(sets):
    for x in sets["dialogue", "train"]:
        lines = [ln for ln in x["prompt"].split("\n") if ln.startswith("#Person")]
        assert 4 <= len(lines) <= 10 and len(lines) == x["meta"]["turns"]
        for i, line in enumerate(lines):
            assert line.startswith("#Person1#: " if i % 2 == 0 else "#Person2#: ")
        assert "#Person1#" in x["completion"] and "{" not in x["completion"]
    assert len({x["meta"]["topic"] for x in sets["dialogue", "train"]}) >= 10


def test_instructions_variety_and_references(sets):
    train = sets["instructions", "train"]
    assert len({x["meta"]["category"] for x in train}) >= 10
    for x in train:
        assert "{" not in x["prompt"]
        if x["meta"]["category"] == "capital":
            country = re.search(r"capital of (.+)\?", x["prompt"]).group(1)
            assert x["completion"].startswith(f"The capital of {country} is ")
        m = re.fullmatch(r"What is (\d+) \+ (\d+) x (\d+)\?", x["prompt"])
        if m:
            a, b, c = map(int, m.groups())
            assert x["completion"].endswith(f"= {a + b * c}.")


def test_jsonl_chat_format(tmp_path, capsys):
    make.main(
        [
            "--out",
            str(tmp_path),
            "--seed",
            "2",
            "--n-train",
            "6",
            "--n-valid",
            "2",
            "--n-test",
            "2",
            "--tasks",
            "sql,mr2text",
        ]
    )
    files = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert files == [
        f"{t}_{s}.jsonl" for t in ("mr2text", "sql") for s in sorted(SPLITS)
    ]
    ids = set()
    for path in tmp_path.glob("*.jsonl"):
        task, split = path.stem.split("_")
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) == {"train": 6, "valid": 2, "test": 2}[split]
        for line in lines:
            r = json.loads(line)
            assert r["task"] == task and r["id"] not in ids
            ids.add(r["id"])
            assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
            assert r["messages"][0]["content"] == r["prompt"]
            assert r["messages"][1]["content"] == r["completion"]


def _fails(main, argv) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1


def test_cli_errors(tmp_path, capsys):
    _fails(make.main, ["--out", str(tmp_path), "--tasks", "sql,poetry"])
    assert capsys.readouterr().err.startswith("error: unknown task 'poetry'")
    _fails(make.main, ["--out", str(tmp_path), "--n-train", "-1"])
    assert "error: sql: size of split 'train' must be >= 0" in capsys.readouterr().err


# --- self-distillation on a tiny random model -------------------------------------

CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer Llama with a character-level tokenizer that mlx_lm.load reads."""
    mx = pytest.importorskip("mlx.core")
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
    )
    from transformers import PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny")
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    chars = list(string.ascii_letters + string.digits + " \n.,:;!?'()[]#*_-+=/<>%")
    tok = Tokenizer(
        models.WordLevel(
            {t: i for i, t in enumerate(specials + chars)}, unk_token="<unk>"
        )
    )
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>"
    )
    hf.chat_template = CHAT
    hf.save_pretrained(path)
    config = {
        "model_type": "llama",
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "intermediate_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": len(specials) + len(chars),
        "tie_word_embeddings": True,
        "eos_token_id": 2,
        # transformers-5 layout: rope_theta only inside rope_parameters
        "rope_parameters": {"rope_theta": 500.0, "rope_type": "default"},
    }
    (path / "config.json").write_text(json.dumps(config))
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.save_safetensors(
        str(path / "model.safetensors"), dict(tree_flatten(model.parameters()))
    )
    return path


def _prompt_file(tmp_path, n=5):
    path = tmp_path / "prompts.jsonl"
    make.write_jsonl(
        path, map(make.to_record, instructions.generate("valid", n, seed=0))
    )
    return path


def test_distill_one_output_per_input_and_resumable(tiny_model_dir, tmp_path):
    from mlx_specstream.train import distill

    model, tokenizer = distill.load(tiny_model_dir)
    assert model.args.rope_theta == 500.0  # read from rope_parameters
    records = distill.read_prompts(str(_prompt_file(tmp_path)))
    out = tmp_path / "out.jsonl"
    stats = distill.distill(
        model, tokenizer, records, str(out), max_tokens=6, batch_size=2, progress=False
    )
    assert (stats.prompts, stats.skipped) == (5, 0) and stats.generated_tokens > 0
    lines = out.read_text().splitlines()
    rows = [json.loads(ln) for ln in lines]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in records)
    by_id = {r["id"]: r for r in records}
    for r in rows:
        assert 1 <= len(r["completion_tokens"]) <= 6
        assert r["finish_reason"] in ("stop", "length")
        assert r["completion"] == tokenizer.decode(r["completion_tokens"])
        assert r["messages"][1]["content"] == r["completion"]
        assert r["reference"] == by_id[r["id"]]["completion"]
        assert r["prompt_tokens"] == distill.chat_tokens(tokenizer, r["prompt"])
        assert r["distill"]["max_tokens"] == 6

    # A killed run leaves two whole lines and a torn third one.
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:17])
    stats = distill.distill(
        model, tokenizer, records, str(out), max_tokens=6, batch_size=4, progress=False
    )
    assert (stats.prompts, stats.skipped) == (3, 2)
    again = out.read_text().splitlines()
    assert again[:2] == lines[:2]
    assert sorted(json.loads(ln)["id"] for ln in again) == sorted(by_id)
    stats = distill.distill(model, tokenizer, records, str(out), progress=False)
    assert (stats.prompts, stats.skipped) == (0, 5)


def test_distill_cli(tiny_model_dir, tmp_path, capsys):
    from mlx_specstream.train import distill

    prompts, out = _prompt_file(tmp_path, 3), tmp_path / "d.jsonl"
    other = tmp_path / "mr.jsonl"
    make.write_jsonl(other, map(make.to_record, mr2text.generate("test", 2, seed=0)))
    args = [
        "--model",
        str(tiny_model_dir),
        "--input",
        str(prompts),
        str(other),
        "--output",
        str(out),
        "--max-tokens",
        "4",
        "--batch-size",
        "8",
        "--no-progress",
    ]
    distill.main(args)
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert sorted(r["task"] for r in rows) == ["instructions"] * 3 + ["mr2text"] * 2
    assert "5 new, 0 already done" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "prompt": "hi"}\n{"prompt": "no id"}\n')
    for inputs, message in [
        ([bad], f"error: {bad}:2: record has no string 'id'"),
        ([prompts, prompts], f"error: {prompts}:1: duplicate id"),
        ([tmp_path / "none.jsonl"], "input file not found"),
    ]:
        argv = ["--model", str(tiny_model_dir), "--output", str(out), "--input"]
        _fails(distill.main, argv + [str(p) for p in inputs])
        assert message in capsys.readouterr().err
    argv = [
        "--model",
        str(tmp_path / "nope"),
        "--input",
        str(prompts),
        "--output",
        str(out),
    ]
    _fails(distill.main, argv)
    assert "error:" in capsys.readouterr().err
