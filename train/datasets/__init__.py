# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Seeded synthetic task sets in the spirit of the paper's tasks (arXiv 2402.11131 §4).

No public copy of sql-create-context, E2E-NLG or DialogSum can be fetched here, so
each task module builds look-alike examples from templates: ``sql`` (text-to-SQL over
random schemas), ``mr2text`` (E2E meaning representation to text), ``dialogue``
(DialogSum-style summaries) and ``instructions`` (prompts for self-distillation).

Every task module exposes ``generate(split, n, seed=0) -> List[dict]``; an example is
``{"task", "id", "prompt", "completion", "meta"}``. Splits never share an item: the
entities an item is built from (table names, restaurant names, cities, topics) are
partitioned between the splits by a hash of the entity, and the random stream of each
split is seeded separately, so the same seed always gives the same files.
"""

import hashlib
import random
from typing import Callable, List, Optional, Sequence, Tuple

SPLITS = ("train", "valid", "test")
SPLIT_WEIGHTS = {"train": 0.8, "valid": 0.1, "test": 0.1}

# Shared vocabulary (no apostrophes: values are pasted into SQL string literals).
FIRST_NAMES = (
    "James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David "
    "Barbara Richard Susan Joseph Jessica Thomas Sarah Charles Karen Daniel Nancy "
    "Matthew Lisa Anthony Betty Mark Sandra Paul Ashley Steven Emily Andrew "
    "Kimberly Joshua Donna Kevin Michelle Brian Carol George Amanda Omar Aisha Wei "
    "Mei Raj Priya Carlos Sofia Lucas Yuki Hiro Olga Ivan Fatima Kwame Ama Lena "
    "Jonas Elif"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez "
    "Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin "
    "Lee Perez Thompson White Harris Clark Lewis Robinson Walker Young Allen King "
    "Wright Scott Torres Nguyen Hill Adams Baker Nelson Carter Mitchell Patel Chen "
    "Kim Singh Okafor Kowalski Rossi Muller Tanaka Silva Novak Berg Costa Dubois "
    "Ivanova"
).split()
CITIES = (
    "London Paris Berlin Madrid Rome Lisbon Vienna Prague Warsaw Dublin Oslo "
    "Stockholm Helsinki Copenhagen Amsterdam Brussels Zurich Athens Istanbul Cairo "
    "Nairobi Lagos Accra Johannesburg Casablanca Tokyo Osaka Seoul Beijing Shanghai "
    "Singapore Bangkok Hanoi Manila Jakarta Mumbai Delhi Karachi Dubai Tehran "
    "Sydney Melbourne Auckland Toronto Vancouver Montreal Chicago Boston Seattle "
    "Denver Austin Miami Atlanta Houston Phoenix Lima Bogota Santiago Quito Caracas "
    "Havana Dallas Portland Leeds Manchester Glasgow Edinburgh Cardiff Bristol Lyon "
    "Marseille Munich Hamburg Milan Naples Porto Seville Valencia Krakow Budapest "
    "Bucharest Sofia Riga Tallinn"
).split()
COUNTRIES = (
    "France Germany Spain Italy Portugal Austria Poland Ireland Norway Sweden "
    "Finland Denmark Netherlands Belgium Switzerland Greece Turkey Egypt Kenya "
    "Nigeria Ghana Morocco Japan Korea China Singapore Thailand Vietnam Philippines "
    "Indonesia India Pakistan Australia Canada Mexico Brazil Argentina Chile Peru "
    "Colombia Cuba Hungary Romania Bulgaria Latvia Estonia Iceland Croatia Serbia "
    "Ukraine"
).split()


class DataError(ValueError):
    """Bad data or input to a data command (a file, a task name, a size); ``str(e)``
    names the file (``"<file>[:<line>]: <problem>"``) where there is one."""


def stable_hash(text: str) -> int:
    """A hash of ``text`` that, unlike ``hash``, is the same in every process."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def split_of(key: str) -> str:
    """The split an item with canonical ``key`` belongs to (80/10/10 by hash)."""
    u = stable_hash(key) / 2**64
    acc = 0.0
    for split in SPLITS:
        acc += SPLIT_WEIGHTS[split]
        if u < acc:
            return split
    return SPLITS[-1]


def partition(pool: Sequence[str], split: str) -> List[str]:
    """The share of ``pool`` reserved for ``split``.

    Items are ranked by hash and cut 80/10/10, every split getting at least one, so the
    three shares are disjoint, cover the pool and do not depend on the seed.
    """
    check_split(split)
    ranked = sorted(dict.fromkeys(pool), key=lambda x: (stable_hash(x), x))
    n = len(ranked)
    n_valid = max(1, round(n * SPLIT_WEIGHTS["valid"]))
    n_test = max(1, round(n * SPLIT_WEIGHTS["test"]))
    cuts = {
        "train": (0, n - n_valid - n_test),
        "valid": (n - n_valid - n_test, n - n_test),
    }
    lo, hi = cuts.get(split, (n - n_test, n))
    return ranked[lo:hi]


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' (choose from {', '.join(SPLITS)})")


def make_rng(task: str, split: str, seed: int) -> random.Random:
    """A random stream private to (task, split, seed); ``str`` seeds are stable."""
    return random.Random(f"{task}:{split}:{seed}")


def generate_unique(
    task: str,
    split: str,
    n: int,
    seed: int,
    sample: Callable[[random.Random, str], Optional[dict]],
) -> List[dict]:
    """Draw ``n`` distinct examples of ``task`` for ``split``.

    Args:
        task: Task name, used in ids and to seed the stream.
        split: One of ``SPLITS``.
        n: How many examples to return.
        seed: Seed of the data set.
        sample: ``sample(rng, split)`` returns ``{"key", "prompt", "completion",
            "meta"}`` or ``None`` for a rejected draw. ``key`` is the canonical form
            used for de-duplication and the id.

    Returns:
        A list of ``n`` examples in draw order.
    """
    check_split(split)
    if n < 0:
        raise DataError(f"{task}: size of split '{split}' must be >= 0, got {n}")
    rng = make_rng(task, split, seed)
    seen, out = set(), []
    budget = 50 * n + 1000
    while len(out) < n and budget > 0:
        budget -= 1
        draw = sample(rng, split)
        if draw is None or draw["key"] in seen:
            continue
        seen.add(draw["key"])
        digest = hashlib.sha256(draw["key"].encode("utf-8")).hexdigest()[:12]
        out.append(
            {
                "task": task,
                "id": f"{task}-{split}-{digest}",
                "prompt": draw["prompt"],
                "completion": draw["completion"],
                "meta": dict(draw.get("meta", {}), key=draw["key"]),
            }
        )
    if len(out) < n:
        raise DataError(
            f"{task}: could only make {len(out)} distinct '{split}' examples "
            f"of {n} asked"
        )
    return out


def person(rng: random.Random) -> str:
    """A random full name."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def pipe_list(text: str) -> List[str]:
    """The ``|``-separated items of ``text``, stripped."""
    return [s.strip() for s in text.split("|") if s.strip()]


def template_prompts(
    templates: List[str],
    pool: List[str],
    counts: Sequence[int] = (3, 5, 7),
    **fills: List[str],
) -> Callable[[random.Random, str], Tuple[str, str]]:
    """A drawer of ``(prompt, "")`` from ``templates`` about a subject ``{x}`` of
    ``pool`` (the split's share), with ``{n}`` one of ``counts`` and each other
    field a choice from ``fills``."""

    def draw(rng: random.Random, split: str) -> Tuple[str, str]:
        x = rng.choice(partition(pool, split))
        extra = {k: rng.choice(v) for k, v in fills.items()}
        template = rng.choice(templates)
        return template.format(x=x, n=rng.choice(counts), **extra), ""

    return draw
