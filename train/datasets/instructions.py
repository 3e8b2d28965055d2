# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Generic instruction prompts for self-distillation (chat, lists, code, math, ...).

Most prompts have no reference answer (``completion`` is empty): the target is the
model's own output (see ``mlx_specstream.train.distill``). Word problems, capital-city
questions and sentiment questions carry a computed reference. Topics are partitioned
between splits; word problems, whose numbers are random, are split by a hash of the
prompt.
"""

import random
from typing import Callable, Dict, List, Optional, Tuple

from . import (
    FIRST_NAMES,
    generate_unique,
    partition,
    pipe_list,
    split_of,
    template_prompts,
)

TASK = "instructions"


_CONCEPTS = pipe_list(
    "photosynthesis|the water cycle|inflation|gravity|compound interest|"
    "how vaccines work|the greenhouse effect|supply and demand|machine learning|"
    "how the internet works|plate tectonics|the immune system|recursion|"
    "how a bill becomes a law|the theory of evolution|black holes|"
    "how batteries store energy|the stock market|climate change|"
    "how airplanes fly|the solar system|blockchain|how the heart pumps blood|"
    "electric circuits|the scientific method|cloud computing|"
    "how rainbows form|the food chain|interest rates|encryption|"
    "how GPS works|the seasons|ocean tides|how memory works in the brain|"
    "public key cryptography|how a compiler works|natural selection|"
    "the water pressure in pipes|how solar panels work|the French Revolution|"
    "the Industrial Revolution|how bees make honey|volcanoes|earthquakes|"
    "the Pythagorean theorem|probability|how muscles grow|digestion"
)
_TERMS = pipe_list(
    "algorithm|metaphor|democracy|an ecosystem|a prime number|"
    "entropy|a noun|an adjective|irony|a budget|a mortgage|an API|a database|"
    "a variable in programming|a hypothesis|an atom|a molecule|a continent|"
    "a haiku|a recession|biodiversity|a vaccine|an operating system|"
    "a spreadsheet|a synonym|an antonym|a peninsula|a verb|a republic|"
    "a renewable resource|nostalgia|empathy|procrastination|a fraction|"
    "an equation|a paragraph|a thesis statement|a carbon footprint|"
    "a protein|a virus|a bacterium|a galaxy|a glacier|a delta|"
    "a sonnet|a palindrome|a monopoly|a tariff|an index fund"
)
_LISTS = pipe_list(
    "tips for better sleep|healthy breakfast ideas|ways to save money|"
    "fruits high in vitamin C|benefits of regular exercise|"
    "countries in South America|programming languages|indoor hobbies|"
    "ways to reduce stress|things to pack for a beach trip|"
    "famous painters|uses of baking soda|tips for a job interview|"
    "ways to stay productive when working from home|board games for families|"
    "vegetables that grow well in pots|tips for learning a new language|"
    "classic novels|birds found in gardens|ways to reduce plastic waste|"
    "kitchen tools every cook needs|good habits for students|"
    "ideas for a rainy day|tips for public speaking|animals that live in the desert|"
    "ways to be more environmentally friendly|tips for writing a good essay|"
    "exercises you can do without equipment|ways to make new friends|"
    "questions to ask on a first date|sources of protein|tips for saving energy "
    "at home|things to do in a big city|inventions that changed the world|"
    "musical instruments|ways to improve your memory|planets in the solar system|"
    "signs of dehydration|team building activities|snacks for a road trip"
)
_HOWTO = pipe_list(
    "boil an egg|change a flat tyre|make a cup of tea|write a cover letter|"
    "plant tomatoes|tie a tie|make pancakes|clean a laptop keyboard|"
    "start running as a beginner|set up a budget|remove a coffee stain|"
    "make a paper airplane|back up my phone|learn to juggle|"
    "prepare for an exam|make a simple salad dressing|hang a picture frame|"
    "start a journal|wash a wool sweater|make cold brew coffee|"
    "create a strong password|meditate for five minutes|fold a fitted sheet|"
    "bake bread at home|care for a houseplant|unclog a sink|"
    "write a thank you note|organise my wardrobe|improve my handwriting|"
    "make a smoothie|sharpen a kitchen knife|train a puppy to sit|"
    "calculate a tip|read a map|make friends in a new city|"
    "cook rice on the stove|take better photos with my phone|"
    "plan a small garden|prepare for a long flight|repot a plant"
)
_SENTENCES = pipe_list(
    "I can not come to the meeting tomorrow because I am sick|"
    "The report was finished by the team late last night|"
    "We should probably think about maybe changing the plan|"
    "The cat sat on the mat and looked out of the window|"
    "Our company will launch a new product next month|"
    "Please send me the files as soon as you can|"
    "The weather was so bad that the match was cancelled|"
    "He did not like the movie because it was too long|"
    "The city council approved the new park last week|"
    "I think that your idea is really good and we should try it|"
    "The students handed in their homework on time|"
    "Due to unforeseen circumstances the event has been postponed|"
    "She quickly finished her lunch and went back to work|"
    "The price of coffee has gone up a lot this year|"
    "Can you tell me where the nearest train station is|"
    "The new software update fixes several annoying bugs|"
    "Our team won the final after a long and difficult season|"
    "The museum is closed on Mondays for cleaning|"
    "My neighbour plays loud music every night|"
    "The chef prepared a delicious meal for all the guests|"
    "We regret to inform you that your application was unsuccessful|"
    "The children were very excited about the school trip|"
    "It is important to drink water during hot weather|"
    "The manager asked everyone to arrive early on Friday|"
    "This phone has a great camera but the battery is weak|"
    "The library will extend its opening hours next month|"
    "They built a small wooden house near the lake|"
    "I forgot to buy milk on the way home|"
    "The train was delayed by forty minutes this morning|"
    "Scientists discovered a new species of frog in the rainforest"
)
_STYLES = pipe_list(
    "Rewrite this sentence to sound more formal|Make this sentence shorter|"
    "Rewrite this sentence in the passive voice|Paraphrase the following sentence|"
    "Make this sentence sound more friendly|Rewrite this sentence for a child"
)
_CODE = pipe_list(
    "reverses a string|checks whether a number is prime|returns the largest "
    "number in a list|counts the vowels in a string|computes the factorial of a "
    "number|checks whether a word is a palindrome|removes duplicates from a list|"
    "converts Celsius to Fahrenheit|returns the n-th Fibonacci number|sorts a list "
    "of names alphabetically|counts how often each word appears in a text|"
    "checks whether a year is a leap year|merges two sorted lists|computes the "
    "average of a list of numbers|finds the second largest number in a list|"
    "capitalises the first letter of every word|checks whether two strings are "
    "anagrams|flattens a nested list|returns the sum of the digits of a number|"
    "validates an email address with a simple check|converts a number to binary|"
    "finds the longest word in a sentence|counts the lines in a file|"
    "returns the common elements of two lists|rounds a number to two decimals|"
    "generates a random password|checks whether a list is sorted|"
    "computes the greatest common divisor of two numbers|splits a list into "
    "chunks of size n|converts a dictionary to a list of pairs"
)
_PAIRS = pipe_list(
    "a virus and a bacterium|weather and climate|a list and a tuple in Python|"
    "speed and velocity|a crocodile and an alligator|RAM and storage|"
    "an ocean and a sea|a simile and a metaphor|debit and credit cards|"
    "a lake and a pond|HTTP and HTTPS|a democracy and a monarchy|"
    "baking soda and baking powder|a job and a career|a hurricane and a tornado|"
    "mass and weight|a moth and a butterfly|stocks and bonds|"
    "a university and a college|an emu and an ostrich|affect and effect|"
    "a frog and a toad|a comet and an asteroid|a violin and a viola|"
    "jam and jelly"
)
_TOPICS = pipe_list(
    "the ocean|autumn leaves|a rainy morning|a busy city|friendship|"
    "a cup of coffee|the moon|a lost cat|the first day of school|mountains|"
    "a summer storm|an old library|a train journey|a garden in spring|snow|"
    "a lighthouse|a birthday|the stars|a quiet village|a river|a robot|"
    "a forest at night|the desert|a market on Saturday|a bicycle ride|"
    "an old photograph|a thunderstorm|a sunrise|a kitchen at dawn|a kite"
)
_FORMS = pipe_list(
    "Write a haiku about|Write a short poem about|Write a two-sentence story "
    "about|Write a short tweet about|Describe in three sentences"
)
_EMAILS = pipe_list(
    "asking for a day off next Friday|to reschedule our meeting|to report a "
    "broken heater|to thank them for their help|to ask for feedback on a report|"
    "to apologise for a late reply|to confirm an appointment|to ask about an "
    "unpaid invoice|to invite them to a team lunch|to request a refund|to ask "
    "for an extension on a deadline|to introduce a new colleague|to cancel a "
    "subscription|to ask for a recommendation letter|to share a project update"
)
_RECIPIENTS = pipe_list(
    "your manager|a colleague|your landlord|a customer|your teacher|a friend"
)
_ADVICE = pipe_list(
    "buying a used car|choosing a laptop|starting a vegetable garden|adopting a "
    "dog|moving to a new city|learning to code|running a first marathon|"
    "asking for a raise|travelling on a budget|choosing a university|"
    "starting a small business|buying a first home|working remotely|"
    "hosting a dinner party|learning to play the guitar|saving for retirement|"
    "preparing for a job interview|planning a wedding|decorating a small flat|"
    "going on a camping trip"
)
_CAPITALS = dict(
    pair.split(":")
    for pair in pipe_list(
        "France:Paris|Germany:Berlin|Spain:Madrid|Italy:Rome|Portugal:Lisbon|Japan:Tokyo|"
        "Canada:Ottawa|Australia:Canberra|Egypt:Cairo|Kenya:Nairobi|Brazil:Brasilia|"
        "Argentina:Buenos Aires|Mexico:Mexico City|India:New Delhi|China:Beijing|"
        "Russia:Moscow|Norway:Oslo|Sweden:Stockholm|Finland:Helsinki|Poland:Warsaw|"
        "Greece:Athens|Turkey:Ankara|Peru:Lima|Chile:Santiago|Ireland:Dublin|"
        "Austria:Vienna|Hungary:Budapest|Thailand:Bangkok|Vietnam:Hanoi|Cuba:Havana|"
        "Morocco:Rabat|Nigeria:Abuja|Ghana:Accra|Colombia:Bogota|Denmark:Copenhagen|"
        "Belgium:Brussels|Netherlands:Amsterdam|Switzerland:Bern|South Korea:Seoul|"
        "Indonesia:Jakarta|New Zealand:Wellington|Iceland:Reykjavik|Ukraine:Kyiv|"
        "Czechia:Prague|Romania:Bucharest|Philippines:Manila|Pakistan:Islamabad"
    )
)
_PRODUCTS = pipe_list(
    "headphones|blender|backpack|phone case|coffee maker|desk lamp|"
    "running shoes|tent|keyboard|water bottle|vacuum cleaner|toaster|"
    "umbrella|office chair|smart watch|electric kettle|yoga mat|"
    "bluetooth speaker|suitcase|hair dryer"
)
_GOOD = pipe_list(
    "works perfectly|arrived early and looks great|is worth every penny|"
    "exceeded my expectations|is sturdy and easy to use|is the best I have owned"
)
_BAD = pipe_list(
    "broke after two days|arrived damaged|is much smaller than described|"
    "stopped working within a week|feels cheap and flimsy|was a waste of money"
)

Draft = Tuple[str, str]


def _math(rng: random.Random, split: str) -> Optional[Draft]:
    name = rng.choice(FIRST_NAMES)
    a, b, c = rng.randint(2, 12), rng.randint(2, 30), rng.randint(3, 9)
    kind = rng.randrange(8)
    if kind == 0:
        q = f"A shop sells pens for {a} dollars each. How much do {b} pens cost?"
        ans = f"{b} pens cost {b} x {a} = {a * b} dollars."
    elif kind == 1:
        q = f"{name} has {a + b} apples and gives away {b}. How many apples are left?"
        ans = f"{a + b} - {b} = {a}, so {name} has {a} apples left."
    elif kind == 2:
        q = f"A train travels at {b * 10} km/h for {c} hours. How far does it go?"
        ans = f"{b * 10} x {c} = {b * 10 * c}, so it travels {b * 10 * c} km."
    elif kind == 3:
        q = (
            f"There are {a * c} students in a class, split evenly into {c} groups. "
            "How many students are in each group?"
        )
        ans = f"{a * c} / {c} = {a}, so each group has {a} students."
    elif kind == 4:
        q = f"A rectangle is {a} cm wide and {b} cm long. What is its area?"
        ans = f"The area is {a} x {b} = {a * b} square centimetres."
    elif kind == 5:
        q = f"{name} reads {b} pages a day. How many pages is that in {c} days?"
        ans = f"{b} x {c} = {b * c}, so {name} reads {b * c} pages."
    elif kind == 6:
        pct, base = rng.choice([10, 20, 25, 50]), 20 * rng.randint(1, 40)
        q = f"What is {pct}% of {base}?"
        ans = f"{pct}% of {base} is {base * pct // 100}."
    else:
        q = f"What is {b} + {a} x {c}?"
        ans = f"Multiply first: {a} x {c} = {a * c}, then {b} + {a * c} = {b + a * c}."
    return (q, ans) if split_of(q) == split else None


def _capital(rng: random.Random, split: str) -> Draft:
    country = rng.choice(partition(sorted(_CAPITALS), split))
    q = rng.choice(
        [
            f"What is the capital of {country}?",
            f"Which city is the capital of {country}?",
        ]
    )
    return q, f"The capital of {country} is {_CAPITALS[country]}."


def _sentiment(rng: random.Random, split: str) -> Draft:
    product = rng.choice(partition(_PRODUCTS, split))
    good = rng.random() < 0.5
    review = f"This {product} {rng.choice(_GOOD if good else _BAD)}."
    q = f"Is the sentiment of this review positive or negative?\n\nReview: {review}"
    return q, "Positive." if good else "Negative."


_CATEGORIES: Dict[str, Tuple[float, Callable[[random.Random, str], Optional[Draft]]]]
_CATEGORIES = {  # name: (weight, drafter)
    "explain": (2, template_prompts(pipe_list("Explain {x} in simple terms.|Explain {x} to a ten-year-"
                            "old.|Give a short explanation of {x}.|Why is it useful to "
                            "understand {x}?"), _CONCEPTS)),
    "define": (1.5, template_prompts(pipe_list("What is {x}?|Define {x} in one sentence.|Give a simple "
                             "definition of {x} with an example."), _TERMS)),
    "list": (2, template_prompts(pipe_list("List {n} {x}.|Give me {n} {x}.|Name {n} {x}."), _LISTS)),
    "howto": (2, template_prompts(pipe_list("How do I {x}?|Give short step-by-step instructions to {x}."
                          "|What is the easiest way to {x}?"), _HOWTO)),
    "rewrite": (1.5, template_prompts(["{y}: {x}."], _SENTENCES, y=_STYLES)),
    "code": (2, template_prompts(pipe_list("Write a Python function that {x}.|Write a JavaScript "
                         "function that {x}.|Show me a short Python function that {x}."
                         "|In JavaScript, write a function that {x} and give an "
                         "example call."), _CODE)),
    "compare": (1, template_prompts(pipe_list("What is the difference between {x}?|Compare {x} in a few "
                            "sentences.|How can I tell apart {x}?"), _PAIRS)),
    "creative": (1.5, template_prompts(["{y} {x}."], _TOPICS, y=_FORMS)),
    "email": (1, template_prompts(["Write a short email to {y} {x}."], _EMAILS, y=_RECIPIENTS)),
    "advice": (1, template_prompts(pipe_list("What should I consider when {x}?|Give me some advice on "
                           "{x}.|What are common mistakes when {x}?"), _ADVICE)),
    "capital": (0.5, _capital),
    "math": (2, _math),
    "sentiment": (1, _sentiment),
}  # fmt: skip


def _sample(rng: random.Random, split: str) -> Optional[dict]:
    names = list(_CATEGORIES)
    kind = rng.choices(names, weights=[_CATEGORIES[k][0] for k in names])[0]
    draft = _CATEGORIES[kind][1](rng, split)
    if draft is None:
        return None
    prompt, completion = draft
    return {
        "key": prompt,
        "prompt": prompt,
        "completion": completion,
        "meta": {"category": kind},
    }


def generate(split: str, n: int, seed: int = 0) -> List[dict]:
    """``n`` distinct instruction prompts for ``split`` (see ``mlx_specstream.train.datasets``)."""
    return generate_unique(TASK, split, n, seed, _sample)
