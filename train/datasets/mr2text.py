# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Meaning representation to text, in the style of the E2E NLG challenge.

The prompt gives a slot list such as ``name[The Eagle], eatType[coffee shop],
food[French], priceRange[moderate], customerRating[3 out of 5], area[riverside],
familyFriendly[yes], near[Burger King]``; the completion is one or two sentences built
from phrase templates that realise every slot (each slot value appears verbatim,
``familyFriendly`` as a family/kid/children phrase).
"""

import random
from typing import Dict, List, Optional

from . import generate_unique, partition

TASK = "mr2text"
SLOTS = (
    "name",
    "eatType",
    "food",
    "priceRange",
    "customerRating",
    "area",
    "familyFriendly",
    "near",
)
VALUES = {
    "eatType": ["restaurant", "coffee shop", "pub"],
    "food": [
        "French",
        "Italian",
        "English",
        "Chinese",
        "Indian",
        "Japanese",
        "Fast food",
        "Mexican",
        "Thai",
        "Spanish",
    ],
    "priceRange": [
        "cheap",
        "moderate",
        "high",
        "less than £20",
        "£20-25",
        "more than £30",
    ],
    "customerRating": [
        "low",
        "average",
        "high",
        "1 out of 5",
        "3 out of 5",
        "5 out of 5",
    ],
    "area": ["riverside", "city centre"],
    "familyFriendly": ["yes", "no"],
}
_FIRST = (
    "The Eagle|The Mill|The Wrestlers|The Vaults|The Cricketers|The Phoenix|"
    "The Punter|The Rice Boat|The Waterman|The Olive Grove|The Golden Palace|"
    "The Twenty Two|The Dumpling Tree|The Plough|The Cambridge Blue|"
    "Blue Spice|Green Man|Strada|Zizzi|Aromi|Alimentum|Bibimbap House|Browns|"
    "Clowns|Cocum|Cotto|Fitzbillies|Giraffe|Loch Fyne|Midsummer House|Taste of "
    "Cambridge|Travellers Rest Beefeater|Wildwood|Bakers|Cafe Sicilia"
).split("|")
_ADJ = (
    "Red|Golden|Silver|Old|Little|Crooked|Royal|Jolly|Black|White|Copper|Hidden|"
    "Lucky|Rusty|Velvet|Sunny|Green|Blue|Merry|Quiet"
).split("|")
_NOUN = (
    "Lion|Fox|Anchor|Lantern|Kettle|Swan|Oak|Harbour|Bell|Crown|Spoon|Teapot|"
    "Compass|Owl|Acorn|Barrel|Mill|Garden|Stag|Thistle"
).split("|")
NAMES = _FIRST + [f"The {a} {n}" for a in _ADJ for n in _NOUN]
LANDMARKS = (
    "Burger King|Cafe Rouge|Raja Indian Cuisine|The Portland Arms|All Bar One|"
    "Express by Holiday Inn|Crowne Plaza Hotel|Rainbow Vegetarian Cafe|Yippee "
    "Noodle Bar|Ranch|The Sorrento|Avalon|Cafe Adriatic|Clare Hall|The Bakers|"
    "Caffe Nero|Pizza Hut|The Six Bells|Rainbow Bridge|Cafe Brazil|The Bridge "
    "Inn|Riverside Market|The Town Hall|Central Library|The Museum|Starbucks|"
    "Costa Coffee|The Railway Station|Victoria Park|The Cathedral"
).split("|")

_PROMPTS = [
    "Write one or two sentences describing this restaurant from its attributes."
    "\n\n{mr}",
    "Turn this meaning representation into a fluent description:\n{mr}",
    "Describe the venue in natural language, mentioning every attribute.\n\n{mr}",
]


def format_mr(slots: Dict[str, str]) -> str:
    """The E2E string form ``name[...], eatType[...], ...`` in canonical slot order."""
    return ", ".join(f"{k}[{slots[k]}]" for k in SLOTS if k in slots)


def _food(v: str) -> str:
    return "fast food" if v == "Fast food" else f"{v} food"


def _predicates(slots: Dict[str, str], rng: random.Random) -> List[str]:
    """One verb phrase per slot except name/eatType, in random order."""
    out = []
    for slot in rng.sample(SLOTS[2:], len(SLOTS) - 2):
        v = slots.get(slot)
        if v is None:
            continue
        if slot == "food":
            out.append(
                rng.choice(
                    [
                        f"serves {_food(v)}",
                        f"offers {_food(v)}",
                        f"specialises in {_food(v)}",
                    ]
                )
            )
        elif slot == "priceRange":
            word = v in ("cheap", "moderate", "high")
            out.append(
                rng.choice([f"has {v} prices", f"is in the {v} price range"])
                if word
                else (
                    f"has a price range of {v}"
                    if "-" in v
                    else rng.choice([f"has a price range of {v}", f"has prices {v}"])
                )
            )
        elif slot == "customerRating":
            word = "out of" not in v
            out.append(
                rng.choice(
                    [
                        f"has {'an' if v[0] in 'aeiou' else 'a'} {v} customer rating",
                        f"is rated {v} by customers",
                    ]
                )
                if word
                else rng.choice(
                    [f"has a customer rating of {v}", f"is rated {v} by customers"]
                )
            )
        elif slot == "area":
            out.append(
                rng.choice(
                    [
                        f"is located in the {v} area",
                        f"is in the {v} area",
                        f"can be found in the {v} area",
                    ]
                )
            )
        elif slot == "familyFriendly":
            out.append(
                rng.choice(
                    [
                        "is family-friendly",
                        "is kid friendly",
                        "welcomes families with children",
                    ]
                )
                if v == "yes"
                else rng.choice(
                    [
                        "is not family-friendly",
                        "is not kid friendly",
                        "does not welcome children",
                    ]
                )
            )
        elif slot == "near":
            out.append(
                rng.choice([f"is near {v}", f"is located near {v}", f"is close to {v}"])
            )
    return out


def _join(parts: List[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def realise(slots: Dict[str, str], rng: random.Random) -> str:
    """One or two sentences that mention every slot of ``slots``."""
    name, eat = slots["name"], slots.get("eatType")
    preds = _predicates(slots, rng)
    if eat:  # the head noun opens the text; the first predicate may join it
        opener = rng.choice(
            [
                f"{name} is a {eat}",
                f"There is a {eat} called {name}",
                f"{name} is a {eat} that",
            ]
        )
        if opener.endswith("that") and preds:
            opener, preds = f"{opener} {preds[0]}", preds[1:]
        elif opener.endswith("that"):
            opener = opener[: -len(" that")]
        subject = rng.choice(["It", f"The {eat}", "This venue"])
    else:
        opener, subject = None, name
    if not preds:
        return f"{opener}."
    if opener is None:
        if len(preds) > 3 and rng.random() < 0.6:
            cut = rng.randint(2, len(preds) - 2)
            return f"{name} {_join(preds[:cut])}. It {_join(preds[cut:])}."
        return f"{name} {_join(preds)}."
    if len(preds) <= 2 and rng.random() < 0.5:
        return f"{opener} which {_join(preds)}."
    return f"{opener}. {subject} {_join(preds)}."


def random_slots(rng: random.Random, split: str) -> Dict[str, str]:
    """A random E2E-style record: a name from ``split``'s share and 2-7 other slots."""
    slots = {"name": rng.choice(partition(NAMES, split))}
    optional = list(VALUES) + ["near"]
    for slot in rng.sample(optional, rng.randint(2, len(optional))):
        if slot == "near":
            slots[slot] = rng.choice(partition(LANDMARKS, split))
        else:
            slots[slot] = rng.choice(VALUES[slot])
    return {k: slots[k] for k in SLOTS if k in slots}


def _sample(rng: random.Random, split: str) -> Optional[dict]:
    slots = random_slots(rng, split)
    mr = format_mr(slots)
    return {
        "key": mr,
        "prompt": rng.choice(_PROMPTS).format(mr=mr),
        "completion": realise(slots, rng),
        "meta": {"mr": mr, "slots": slots},
    }


def generate(split: str, n: int, seed: int = 0) -> List[dict]:
    """``n`` distinct MR-to-text examples for ``split`` (see ``mlx_specstream.train.datasets``)."""
    return generate_unique(TASK, split, n, seed, _sample)
