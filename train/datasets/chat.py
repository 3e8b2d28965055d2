# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Open chat prompts for self-distillation: what users of a local assistant ask.

Open questions, explanations, lists, recommendations, short code, rewriting and
short writing, phrased the loose ways people type them. No reference answers: the
target is the model's own output. Subjects are partitioned between splits (see
``partition``), so a test prompt never shares its subject with a training prompt.
The ``instructions`` task covers a narrower set of forms; this one is wider in both
forms and subjects.
"""

import random
from typing import Callable, Dict, List, Optional, Tuple

from . import generate_unique, partition, pipe_list

TASK = "chat"


# Things that can be explained or asked about ("how does X work", "tell me about X").
_SUBJECTS = pipe_list(
    "a refrigerator|a microwave oven|a jet engine|a nuclear reactor|the human eye|"
    "the stock exchange|a credit score|a search engine|a touch screen|Wi-Fi|"
    "a hybrid car|an electric guitar|a 3D printer|a heat pump|noise-cancelling headphones|"
    "a thermostat|the lungs|the kidneys|a lithium battery|a wind turbine|"
    "a hydroelectric dam|an elevator|a vaccine trial|a neural network|a web browser|"
    "a password manager|a VPN|a camera lens|a barcode scanner|a smoke detector|"
    "the Roman Empire|the Renaissance|the Cold War|the printing press|the Silk Road|"
    "the Great Wall of China|ancient Egypt|the Moon landing|the Olympic Games|"
    "jazz music|impressionist painting|the Amazon rainforest|coral reefs|"
    "the Sahara desert|the Arctic|honeybees|octopuses|dolphins|wolves|elephants|"
    "sourdough bread|fermentation|coffee roasting|olive oil|chocolate making|"
    "the metric system|time zones|leap years|the calendar|daylight saving time|"
    "the placebo effect|caffeine|vitamin D|sleep cycles|dreams|habits|motivation|"
    "version control with git|unit testing|SQL databases|JSON|regular expressions|"
    "object-oriented programming|functional programming|Docker containers|"
    "the Linux command line|HTML and CSS|REST APIs|big O notation|binary search|"
    "linked lists|hash functions|sorting algorithms|recursion in Python|"
    "the electoral college|the United Nations|taxes|pensions|insurance|"
    "renting versus buying a home|electric cars|recycling|composting|"
    "the northern lights|eclipses|comets|Mars|Jupiter|the Big Bang|DNA|"
    "antibiotics|allergies|the common cold|blood types|meditation|yoga|"
    "chess|the game of Go|poker odds|crossword puzzles|origami|knitting"
)
_WHY = pipe_list(
    "do cats purr|do leaves change colour in autumn|is the ocean salty|do we yawn|"
    "do onions make you cry|does ice float|do we have fingerprints|is sleep important|"
    "do birds migrate|does bread go stale|do we get hiccups|is exercise good for the brain|"
    "do planes leave white trails|does the moon change shape|do dogs wag their tails|"
    "is breakfast called the most important meal|do we need vitamins|"
    "do prices go up over time|do computers need memory|do some people snore|"
    "does metal feel colder than wood|do stars twinkle|is gold valuable|"
    "do we dream|does coffee keep you awake|do plants need sunlight|"
    "do zebras have stripes|is the Dead Sea so salty|do our ears pop on a plane|"
    "do bubbles form in boiling water|do apples turn brown when cut"
)
_THINGS = pipe_list(
    "books for someone who likes science fiction|podcasts about history|"
    "hobbies that cost little money|healthy snacks for work|houseplants that are "
    "hard to kill|games to play with kids|ways to spend a weekend alone|"
    "gift ideas for a ten-year-old|weekend projects for beginners in woodworking|"
    "apps that help with focus|ways to practise mindfulness|easy dinners for a busy "
    "week|beginner exercises for strength|places to visit in Europe|films for a "
    "family night|questions for a job interview|ideas for a birthday party|"
    "ways to learn maths online|vegetarian meals with lots of protein|skills "
    "worth learning this year|cheap ways to decorate a bedroom|habits of successful "
    "people|side dishes for a barbecue|activities for a team offsite|reasons to "
    "learn a second language|ways to use leftover rice|good names for a cat|"
    "warm-up exercises before running|topics for a school presentation|"
    "ways to keep a conversation going|first projects for learning Python|"
    "things to check before buying a used bike|tips for a long car drive|"
    "morning routines that boost energy|ways to be kinder to yourself"
)
_GOALS = pipe_list(
    "get better at chess|wake up earlier|drink more water|read more books|"
    "stop procrastinating|be more confident at work|learn to cook|save for a holiday|"
    "keep my desk tidy|get into running|write better emails|remember names|"
    "speak up in meetings|stay motivated to study|eat less sugar|spend less time on "
    "my phone|grow herbs on a balcony|learn to draw|improve my posture|make my "
    "presentations more engaging|get along with a difficult coworker|learn touch "
    "typing|keep a plant alive|plan a weekly menu|make my code more readable|"
    "prepare for a coding interview|start a podcast|take better notes in class|"
    "deal with stress before an exam|manage my time better"
)
_CODE = pipe_list(
    "read a CSV file|reverse a list|sort a dictionary by value|count words in a "
    "string|remove whitespace from a string|check if a file exists|get the current "
    "date|find the maximum of a list|merge two dictionaries|convert a string to an "
    "integer|loop over a list with indexes|write to a text file|make an HTTP request|"
    "parse JSON|generate a random number|remove an item from a list|check if a "
    "string contains a substring|split a string by commas|round a float|create a "
    "class with a constructor|handle an exception|filter a list with a condition|"
    "compute the mean of a list|find duplicates in a list|reverse the words in a "
    "sentence|zip two lists together|sort a list of tuples by the second item|"
    "count the characters in a file|turn a list into a set|format a number with "
    "commas"
)
_LANGS = pipe_list("Python|JavaScript|Python|Python|Java|Go|Rust|C#|Ruby|TypeScript")
_TEXTS = pipe_list(
    "Hey, just wanted to check if you got my last message about the meeting, "
    "because I did not hear back and I am not sure if we are still on for Thursday.|"
    "Our team has been working really hard on the new website and we think it "
    "is almost ready, but there are still a few bugs that need fixing.|"
    "The weather this weekend is going to be sunny and warm, so it might be a "
    "good idea to have the picnic in the park instead of at home.|"
    "I have been learning to play the piano for six months and I can now play a "
    "few simple songs, although I still find reading music quite difficult.|"
    "The new café on the corner serves great coffee but the service is slow and "
    "the prices are a bit higher than other places nearby.|"
    "Due to the heavy rain, the football match has been moved to next Sunday "
    "and all tickets will remain valid for the new date.|"
    "Many people think that working from home makes them more productive, but "
    "others miss the social contact and the routine of going to an office.|"
    "The library is looking for volunteers to help with its summer reading "
    "programme for children, which runs every Saturday morning in July.|"
    "After trying three different recipes, I finally managed to bake a loaf of "
    "bread that was soft inside and crispy on the outside.|"
    "The city plans to add more bike lanes next year to reduce traffic and make "
    "cycling safer for people who commute to work.|"
    "I am writing to let you know that your order has been shipped and should "
    "arrive within three to five working days.|"
    "Electric scooters have become popular in many cities, but some residents "
    "complain that they are left blocking pavements.|"
    "My grandmother taught me how to knit when I was young, and now I make "
    "scarves for my friends every winter.|"
    "The museum's new exhibition shows paintings from the 19th century and will "
    "be open until the end of the year.|"
    "Our internet connection keeps dropping in the evenings, which makes video "
    "calls almost impossible.|"
    "The school has decided to start classes half an hour later so that "
    "students can get more sleep."
)
_REWRITES = pipe_list(
    "Rewrite this to sound more professional|Make this more concise|Summarize this "
    "in one sentence|Rewrite this in a friendlier tone|Fix the grammar and make it "
    "clearer|Turn this into a short bullet list|Rewrite this for a young reader|"
    "What is the main point of this text|Give this text a short title"
)
_WRITE = pipe_list(
    "a short product description for a reusable water bottle|a motivational "
    "message for a friend starting a new job|a short bedtime story about a brave "
    "mouse|an invitation to a neighbourhood barbecue|a two-line joke about "
    "programmers|a limerick about a cat|a short speech for a friend's wedding|a "
    "polite message declining an invitation|a short review of a pizza restaurant|"
    "a social media post announcing a bake sale|an out-of-office reply|a short "
    "poem about the sea|a welcome message for new club members|a short apology to "
    "a customer for a late delivery|a riddle with its answer|a slogan for a bike "
    "shop|a four-line poem about coffee|a short story that starts with a knock on "
    "the door|a note to a neighbour about a lost package|a birthday message for "
    "a grandparent|a short description of a rainy city street|a to-do list for "
    "moving house|a packing list for a weekend hike|a short letter to a future "
    "self|a one-paragraph summary of why reading matters"
)
_PAIRS = pipe_list(
    "tea or coffee|a laptop or a desktop|running or swimming|renting or buying|"
    "Python or JavaScript for a beginner|paper books or e-books|a cat or a dog|"
    "working early in the morning or late at night|a gas or an induction stove|"
    "public transport or driving in a city|learning guitar or piano|"
    "studying alone or in a group|a gym membership or home workouts|"
    "saving or investing|a city break or a beach holiday"
)

Draft = Tuple[str, str]


def _from(
    templates: List[str], pool: List[str], **fills: List[str]
) -> Callable[[random.Random, str], Draft]:
    """``template_prompts`` with counts 3-6 drawn before the template: the draw
    order is part of what a seed gives, so it stays as the shipped streams' data
    was drawn."""

    def draw(rng: random.Random, split: str) -> Draft:
        x = rng.choice(partition(pool, split))
        extra = {k: rng.choice(v) for k, v in fills.items()}
        n = rng.choice([3, 4, 5, 6])
        return rng.choice(templates).format(x=x, n=n, **extra), ""

    return draw


_CATEGORIES: Dict[str, Tuple[float, Callable[[random.Random, str], Optional[Draft]]]]
_CATEGORIES = {  # name: (weight, drafter)
    "how": (2, _from(pipe_list("How does {x} work?|Can you explain how {x} works?|"
                        "Tell me about {x}.|What is interesting about {x}?|"
                        "Give me a short introduction to {x}.|What should a beginner "
                        "know about {x}?|Explain {x} like I am five.|What are the "
                        "main facts about {x}?|I never understood {x}. Can you help?|"
                        "Write a short paragraph about {x}."), _SUBJECTS)),
    "why": (1.5, _from(pipe_list("Why {x}?|Can you tell me why {x}?|I have always wondered: "
                          "why {x}?|Explain briefly why {x}."), _WHY)),
    "list": (2, _from(pipe_list("What are some {x}?|Can you suggest {n} {x}?|I need {n} "
                         "{x}.|Give me a list of {x}.|Recommend {n} {x}, with a short "
                         "reason for each."), _THINGS)),
    "goal": (2, _from(pipe_list("How can I {x}?|What is a good way to {x}?|I want to {x}. "
                         "Where do I start?|Any tips to help me {x}?|Give me a "
                         "simple plan to {x}.|What are common mistakes people make "
                         "when they try to {x}?"), _GOALS)),
    "code": (2, _from(pipe_list("How do I {x} in {y}?|Show me how to {x} in {y}.|"
                         "Write {y} code to {x}.|What is the simplest way to {x} "
                         "in {y}? Give an example."), _CODE, y=_LANGS)),
    "rewrite": (1.5, _from(pipe_list("{y}:\n\n{x}|{y}.\n\n{x}"), _TEXTS, y=_REWRITES)),
    "write": (1.5, _from(pipe_list("Write {x}.|Can you write {x}?|Please draft {x}.|"
                            "Help me write {x}."), _WRITE)),
    "choose": (1, _from(pipe_list("Which is better, {x}?|Should I choose {x}?|What are the "
                           "pros and cons of {x}?"), _PAIRS)),
}  # fmt: skip


def _sample(rng: random.Random, split: str) -> Optional[dict]:
    names = list(_CATEGORIES)
    kind = rng.choices(names, weights=[_CATEGORIES[k][0] for k in names])[0]
    prompt, completion = _CATEGORIES[kind][1](rng, split)
    return {"key": prompt, "prompt": prompt, "completion": completion,
            "meta": {"category": kind}}  # fmt: skip


def generate(split: str, n: int, seed: int = 0) -> List[dict]:
    """``n`` distinct open chat prompts for ``split`` (see ``mlx_specstream.train.datasets``)."""
    return generate_unique(TASK, split, n, seed, _sample)
