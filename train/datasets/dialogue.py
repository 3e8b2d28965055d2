# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Two-speaker everyday dialogues with template summaries, in the style of DialogSum.

A scene is a list of exchanges (a #Person1# line and a #Person2# answer). The core
exchanges are always spoken; extra exchanges, each with its own summary sentence, and
an optional greeting bring a dialogue to 4-10 turns. The summary is the scene's core
sentence plus the sentences of the extras that were spoken. Slot values (cities,
dishes, items, names, ...) come from pools partitioned between the splits.
"""

import random
from typing import Dict, List, Optional, Tuple

from . import CITIES, FIRST_NAMES, LAST_NAMES, generate_unique, partition

TASK = "dialogue"

_POOLS = {
    "city": CITIES,
    "first": FIRST_NAMES,
    "last": LAST_NAMES,
    "dish": (
        "lasagne|mushroom risotto|lamb curry|grilled salmon|pad thai|beef stew|"
        "vegetable paella|chicken tagine|seafood pasta|tofu stir-fry|fish pie|"
        "pumpkin soup|duck confit|bean chilli|spinach pie|ramen"
    ).split("|"),
    "item": (
        "jacket|pair of jeans|sweater|dress|pair of boots|raincoat|shirt|skirt|"
        "pair of trainers|coat|scarf|suit|blouse|hoodie|pair of sandals"
    ).split("|"),
    "book": (
        "The Silent River|A Winter Garden|The Iron Lantern|Letters from Lisbon|"
        "The Last Orchard|Northern Lights|The Paper Crown|A House by the Sea|"
        "The Glass Bridge|Seven Small Islands|The Quiet Harbour|Distant Stars|"
        "The Copper Key|Autumn in Kyoto|The Hidden Door"
    ).split("|"),
    "job": (
        "sales assistant|software developer|accountant|nurse|graphic designer|"
        "teacher|marketing manager|data analyst|chef|receptionist|engineer|"
        "translator|project manager|librarian|pharmacist"
    ).split("|"),
    "subject": (
        "chemistry|history|calculus|biology|economics|physics|French|statistics|"
        "philosophy|geography|literature|accounting|psychology"
    ).split("|"),
    "lost": (
        "wallet|phone|umbrella|keys|passport|laptop bag|sunglasses|watch|"
        "notebook|camera|purse|headphones"
    ).split("|"),
    "place": (
        "the museum|the train station|the post office|the city hall|the library|"
        "the hospital|the bank|the stadium|the art gallery|the market|the park|"
        "the bus station|the cinema|the university"
    ).split("|"),
    "drink": (
        "latte|cappuccino|green tea|hot chocolate|espresso|iced coffee|mocha|"
        "chai latte|lemonade|flat white"
    ).split("|"),
    "snack": (
        "blueberry muffin|croissant|cheese sandwich|banana bread|cookie|bagel|"
        "slice of carrot cake|scone"
    ).split("|"),
    "problem": (
        "the brakes squeak|the engine overheats|a warning light is on|"
        "the battery keeps dying|the air conditioning does not work|"
        "there is a strange noise from the engine"
    ).split("|"),
    "gift": (
        "a board game|a scarf|a cookbook|concert tickets|a plant|a watch|"
        "a photo album|headphones|a painting|a bottle of perfume"
    ).split("|"),
    "street": (
        "Oak Street|Mill Lane|Park Road|Church Street|High Street|Station Road|"
        "Elm Avenue|Bridge Street|King Street|Queen Road|Market Square|"
        "Victoria Road|Green Lane|Hill Street|Water Lane"
    ).split("|"),
    "gym": (
        "FitLife|Iron Temple|PowerHouse|Peak Fitness|Urban Gym|Core Studio|"
        "Pulse Fitness|Energy Club|Motion Gym|Summit Sports|Flex Centre"
    ).split("|"),
}
# Small pools shared by all splits; every scene's core also uses an entity above.
_SHARED = {
    "day": "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday".split("|"),
    "time": "6 pm|6:30 pm|7 pm|7:30 pm|8 pm|8:30 pm|noon|1 pm|10 am|9 am".split("|"),
    "size": "two|three|four|five|six|seven|eight".split("|"),
    "color": "black|blue|green|red|grey|white|brown|navy".split("|"),
}
_POOLS["symptom"] = (
    "a sore throat|a headache|a cough|a fever|back pain|a stomach ache|"
    "trouble sleeping|an earache"
).split("|")
_NUMBERS = {
    "price": (15, 180),
    "days": (2, 6),
    "nights": (1, 7),
    "rent": (600, 2500),
    "years": (2, 12),
    "cost": (80, 900),
    "fee": (20, 70),
    "fare": (12, 140),
    "rooms": (1, 4),
}

# A scene: "# topic", "= summary of the core", "> core exchange" lines (#Person1# line |
# #Person2# line) and "+ extra exchange | its summary sentence" lines (may be empty).
_SCENE_TEXT = """
# restaurant booking
= #Person1# books a table for {size} at {time} on {day} under the name {last}.
> Hello, I would like to book a table for {size} on {day}. | Certainly. What time would you like to come?
> Around {time}, if possible. The name is {last}. | That is fine. Your table for {size} is booked for {time} on {day}.
+ Do you have any good main dishes? | Yes, our {dish} is very popular. | #Person2# recommends the {dish}.
+ Could we sit by the window? | Of course, I will note that down. | #Person1# asks for a window seat.
+ Is there parking nearby? | Yes, there is a car park behind the restaurant. | #Person2# says there is parking behind the restaurant.
# clothes shopping
= #Person1# buys a {color} {item} for {price} dollars.
> Excuse me, do you have this {item} in {color}? | Let me check. Yes, we have one in {color}.
> Great. How much is it? | It is {price} dollars.
> I will take it. | Here you are. Would you like a bag?
+ Can I try it on first? | Sure, the fitting rooms are over there. | #Person1# tries it on first.
+ Can I pay by card? | Yes, we accept all cards. | #Person1# pays by card.
+ Is there a discount today? | No, I am afraid the sale ended yesterday. | There is no discount because the sale has ended.
# asking for directions
= #Person1# asks the way to {place} and #Person2# gives directions.
> Excuse me, how do I get to {place}? | Go straight ahead and turn left at the second corner.
> Is it far from here? | No, it is about a ten minute walk.
+ Can I take a bus instead? | Yes, the number {days} bus stops right outside. | #Person2# says the number {days} bus also goes there.
+ Is it open today? | I think it is open until six. | #Person2# thinks it is open until six.
+ Thank you so much. | You are welcome. Enjoy your day. |
# doctor visit
= #Person1# has had {symptom} for {days} days and sees #Person2#, a doctor.
> Doctor, I have had {symptom} for {days} days. | I see. Do you have any other symptoms?
> No, just that. I feel very tired too. | You should rest and drink plenty of water.
+ Do I need any medicine? | I will prescribe something mild for you. | #Person2# prescribes some medicine.
+ Can I go to work tomorrow? | Better stay home for a couple of days. | #Person2# advises #Person1# to stay home for a couple of days.
+ Should I come back? | Come back next week if you are not better. | #Person1# should come back next week if the problem continues.
# job interview
= #Person1# interviews #Person2# for a job as {a_job}.
> Thank you for coming. Why do you want to work here as {a_job}? | I enjoy this kind of work and I like your company.
> How much experience do you have? | I have worked as {a_job} for {years} years.
+ What is your greatest strength? | I am organised and I learn quickly. | #Person2# says they are organised and learn quickly.
+ When could you start? | I could start on {day}. | #Person2# could start on {day}.
+ Do you have any questions for us? | Yes, is there any training? | #Person2# asks about training.
# weekend trip
= #Person1# and #Person2# plan a {days}-day trip to {city}.
> Shall we go to {city} this weekend? | Good idea. How long should we stay?
> Maybe {days} days. | Fine, I will look for a hotel.
+ Should we take the train? | Yes, the train is faster than driving. | They decide to take the train.
+ What should we see there? | I want to visit the old town and {place}. | #Person2# wants to visit the old town and {place}.
+ Who will book the tickets? | I will do it tonight. | #Person2# will book the tickets tonight.
# hotel check-in
= #Person1# checks in at #Person2#'s hotel for {nights} nights under the name {last}.
> Hello, I have a reservation under the name {last}. | Welcome. Yes, a room for {nights} nights. May I see your passport?
> Here you are. | Thank you. Your room is on the third floor.
+ Is breakfast included? | Yes, breakfast is served from seven to ten. | Breakfast is included.
+ Is there Wi-Fi in the room? | Yes, the password is on your key card. | The room has Wi-Fi.
+ What time is check-out? | Check-out is at eleven. | Check-out is at eleven.
# library loan
= #Person1# borrows {book} from the library and must return it in {days} weeks.
> Hi, I would like to borrow {book}. | Sure. Can I see your library card?
> Here it is. | Thank you. Please return it within {days} weeks.
+ Can I renew it online? | Yes, you can renew it once on our website. | The loan can be renewed once online.
+ Do you have other books by the same author? | Yes, they are on the second floor. | Other books by the author are on the second floor.
# renting a flat
= #Person1# asks about a {rooms}-bedroom flat on {street} that costs {rent} dollars a month.
> I am calling about the {rooms}-bedroom flat on {street}. Is it still available? | Yes, it is. The rent is {rent} dollars a month.
> Are bills included? | No, bills are paid separately.
+ Can I see it on {day}? | Yes, {day} at {time} works for me. | They arrange a viewing on {day} at {time}.
+ Are pets allowed? | Small pets are fine. | Small pets are allowed.
+ Is there a deposit? | Yes, one month of rent. | The deposit is one month of rent.
# coffee shop order
= #Person1# orders {a_drink} from #Person2#.
> Hi, could I have {a_drink}, please? | Sure. Small, medium or large?
> Medium, please. | That will be four dollars.
+ And a {snack}, please. | Of course, I will warm it up for you. | #Person1# also orders a {snack}.
+ Is it for here or to go? | To go, please. | #Person1# takes it to go.
+ Do you take cards? | Yes, just tap here. | #Person1# pays by card.
# birthday party
= #Person1# and #Person2# plan a birthday party for {first} on {day}.
> It is {first}'s birthday on {day}. Shall we have a party? | Yes, let us invite a few friends.
> What should we buy as a present? | How about {gift}?
+ Where should we have it? | We could have it at my place. | The party will be at #Person2#'s place.
+ Should I bake a cake? | That would be lovely. | #Person1# will bake a cake.
# car repair
= #Person1# brings a car to #Person2#'s garage because {problem}; the repair will cost about {cost} dollars.
> My car needs a check. {problem_cap}. | Let me have a look at it.
> How much will it cost? | About {cost} dollars.
+ When will it be ready? | It should be ready in {days} days. | The car will be ready in {days} days.
+ Can you call me when it is done? | Sure, leave me your number. | #Person2# will call when it is done.
# train ticket
= #Person1# buys a train ticket to {city} for {fare} dollars.
> One ticket to {city}, please. | Single or return?
> Single, please. | That is {fare} dollars. The next train leaves at {time}.
+ Which platform is it? | Platform {days}. | The train leaves from platform {days}.
+ Is there a student discount? | Only with a student railcard. | A student discount needs a railcard.
# exam preparation
= #Person1# is worried about the {subject} exam on {day} and #Person2# offers to help.
> I am really worried about the {subject} exam on {day}. | Do not worry, I can help you revise.
> Thanks. Could we meet tomorrow? | Sure, let us meet at the library.
+ What topics should I focus on? | Start with last year's papers. | #Person2# suggests practising with past papers.
+ How long should I study each day? | Two or three hours with breaks. | #Person2# recommends two or three hours a day with breaks.
# lost property
= #Person1# lost {a_lost} at {place} and reports it to #Person2#.
> I think I left my {lost} at {place} this morning. | Can you describe it?
> It is {color} and quite new. | Let me check our lost property box.
+ Did anyone hand it in? | Yes, we have one that matches. | Someone has handed in a matching {lost}.
+ Can you call me if it turns up? | Of course, please leave your number. | #Person2# will call if it turns up.
# gym membership
= #Person1# asks #Person2# about membership at {gym}, which costs {fee} dollars a month.
> Hi, how much is a membership at {gym}? | It is {fee} dollars a month.
> Does that include classes? | Yes, all group classes are included.
+ Can I try it first? | You can have a free trial day. | #Person1# can have a free trial day.
+ What are your opening hours? | We are open from six to ten every day. | The gym is open from six to ten every day.
"""


def _parse_scenes(text: str) -> Dict[str, Tuple[str, List[tuple], List[tuple]]]:
    scenes: Dict[str, Tuple[str, List[tuple], List[tuple]]] = {}
    for line in text.strip().splitlines():
        tag, parts = line[0], [p.strip() for p in line[1:].split("|")]
        if tag == "#":
            topic = parts[0]
        elif tag == "=":
            scenes[topic] = (parts[0], [], [])
        elif tag == ">":
            scenes[topic][1].append(tuple(parts))
        else:
            scenes[topic][2].append((tuple(parts[:2]), parts[2]))
    return scenes


_SCENES = _parse_scenes(_SCENE_TEXT)
_GREETINGS = [
    ("Hi, how are you?", "Fine, thanks. And you?"),
    ("Good morning.", "Good morning. How can I help you?"),
    ("Hello there.", "Hi, nice to see you."),
]
_PROMPTS = [
    "Summarize the following dialogue.\n\n{dialogue}",
    "Write a short summary of this conversation.\n\n{dialogue}",
    "{dialogue}\n\nBriefly summarize the dialogue above.",
]


def _fill(rng: random.Random, split: str) -> Dict[str, str]:
    slots = {k: rng.choice(partition(v, split)) for k, v in _POOLS.items()}
    slots.update({k: rng.choice(v) for k, v in _SHARED.items()})
    slots.update({k: str(rng.randint(*r)) for k, r in _NUMBERS.items()})
    for k in ("job", "lost", "drink"):
        slots[f"a_{k}"] = ("an " if slots[k][0] in "aeiou" else "a ") + slots[k]
    slots["problem_cap"] = slots["problem"][0].upper() + slots["problem"][1:]
    return slots


def random_dialogue(rng: random.Random, split: str) -> Dict[str, object]:
    """A dialogue of 4-10 turns: ``{"topic", "turns": [(who, text)], "summary"}``."""
    topic = rng.choice(sorted(_SCENES))
    core_summary, core, extras = _SCENES[topic]
    slots = _fill(rng, split)
    n_pairs = rng.randint(max(2, len(core)), 5)
    extra = rng.sample(extras, min(len(extras), n_pairs - len(core)))
    extra.sort(key=extras.index)  # keep the scene's natural order
    pairs = list(core) + [e[0] for e in extra]
    if len(pairs) < n_pairs:
        pairs.insert(0, rng.choice(_GREETINGS))
    turns = [
        (who, line.format(**slots))
        for pair in pairs
        for who, line in zip(("#Person1#", "#Person2#"), pair)
    ]
    if len(turns) < 10 and rng.random() < 0.3:  # an odd count: a closing line
        turns.append(
            ("#Person1#", rng.choice(["Thanks a lot.", "Great, thank you.", "OK."]))
        )
    summary = " ".join([core_summary] + [e[1] for e in extra if e[1]]).format(**slots)
    return {"topic": topic, "turns": turns, "summary": summary}


def _sample(rng: random.Random, split: str) -> Optional[dict]:
    d = random_dialogue(rng, split)
    text = "\n".join(f"{who}: {line}" for who, line in d["turns"])
    return {
        "key": text,
        "prompt": rng.choice(_PROMPTS).format(dialogue=text),
        "completion": d["summary"],
        "meta": {"topic": d["topic"], "turns": len(d["turns"])},
    }


def generate(split: str, n: int, seed: int = 0) -> List[dict]:
    """``n`` distinct dialogue-summary examples for ``split`` (see ``mlx_specstream.train.datasets``)."""
    return generate_unique(TASK, split, n, seed, _sample)
