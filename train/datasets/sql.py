# Copyright © 2026 mlx-specstream authors. Apache-2.0.
"""Text-to-SQL over random one-table schemas, in the style of sql-create-context.

The prompt gives a ``CREATE TABLE`` statement and a question; the completion is the SQL.
Every gold query is parsed with sqlglot and run in sqlite3 on the table filled with the
random rows kept in ``meta["rows"]`` (examples that fail, return nothing or depend on
how ties are broken are dropped). ``execution_match`` and ``exact_match`` score
predictions.
"""

import random
import re
import sqlite3
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import sqlglot
from sqlglot import exp

from . import CITIES, COUNTRIES, generate_unique, partition, person, split_of

TASK = "sql"

_POOLS = {
    k: v.split("|")
    for k, v in {
        "DEPT": "Sales|Marketing|Engineering|Finance|Support|Legal|Research|Operations",
        "MAJOR": "Biology|History|Physics|Economics|Chemistry|Music|Law|Mathematics",
        "GENRE": "Fantasy|Mystery|Romance|Science Fiction|Biography|Horror|Poetry",
        "FILM": "Drama|Comedy|Action|Thriller|Animation|Documentary|Western",
        "MUSIC": "Pop|Rock|Jazz|Classical|Hip Hop|Folk|Electronic|Blues",
        "PCAT": "Electronics|Clothing|Toys|Garden|Kitchen|Books|Sports|Beauty",
        "BRAND": "Acme|Globex|Initech|Umbrella|Stark|Wayne|Hooli|Vandelay",
        "TEAM": "Rovers|United|Athletic|Wanderers|Rangers|City|Albion|Dynamo",
        "POS": "Goalkeeper|Defender|Midfielder|Forward",
        "AIRLINE": "SkyJet|AirNova|BlueWing|Polar Air|SunFly|TransGlobe",
        "WARD": "Cardiology|Oncology|Pediatrics|Neurology|Orthopedics|Maternity",
        "MAKE": "Toyota|Ford|Honda|Volvo|Fiat|Kia|Audi|Mazda|Skoda",
        "COLOR": "red|blue|black|white|silver|green|yellow",
        "CUISINE": "Italian|Mexican|Thai|Indian|French|Japanese|Greek|Lebanese",
        "STATUS": "pending|shipped|delivered|cancelled|returned",
        "FACULTY": "Science|Arts|Engineering|Business|Medicine",
        "CONT": "Europe|Asia|Africa|Oceania|North America|South America",
        "LANG": "English|Spanish|French|Arabic|Portuguese|Russian|Hindi",
        "PLATFORM": "PC|Switch|PlayStation|Xbox|Mobile",
        "ACCT": "checking|savings|business|student",
        "SPECIES": "dog|cat|rabbit|parrot|hamster|turtle",
        "PARTY": "Democratic|Republican|Green|Liberal|Independent",
        "VENUE": "Arena|Stadium|Hall|Theatre|Club|Park",
        "YESNO": "yes|no",
        "FIRST": "Max|Bella|Luna|Rocky|Coco|Milo|Daisy|Oscar|Nala|Simba|Pepper|Toby",
        "ADJ": "Silent|Golden|Hidden|Broken|Crimson|Last|Wild|Frozen|Lost|Bright|"
        "Dark|Distant|Secret|Burning|Quiet|Electric|Iron|Velvet|Paper|Glass",
        "NOUN": "River|Garden|Empire|Mountain|Letter|Shadow|Harbor|Kingdom|Storm|"
        "Mirror|Forest|Bridge|Island|Crown|Voyage|Orchard|Signal|Lantern|Winter|"
        "Horizon",
        "ITEM": "Lamp|Chair|Kettle|Backpack|Headphones|Blender|Jacket|Drone|Tent|"
        "Watch|Camera|Speaker|Mug|Helmet|Scarf|Router|Keyboard|Bicycle|Stroller|Desk",
    }.items()
}
_POOLS["CITY"], _POOLS["COUNTRY"] = CITIES, COUNTRIES

# One domain a line: "singular|plural|table names = columns"; a column is
# "name:KIND:ARG:phrase" with KIND P person, C categorical pool ARG, U unique name of
# kind ARG, I int range ARG, R real range ARG, D date.
_DOMAINS = [tuple(line.split(" = ")) for line in """
employee|employees|employees,staff,employee_records = name:P::name;department:C:DEPT:department;salary:I:30000-150000:salary;age:I:21-65:age;city:C:CITY:city;hire_date:D::hire date
student|students|students,pupils,student_records = name:P::name;major:C:MAJOR:major;gpa:R:2-4:GPA;age:I:17-30:age;home_country:C:COUNTRY:home country;credits:I:0-160:number of credits
book|books|books,library_books,novels = title:U:TITLE:title;author:P::author;genre:C:GENRE:genre;pages:I:90-900:number of pages;publication_year:I:1950-2023:publication year;price:R:5-60:price
movie|movies|movies,films,cinema_releases = title:U:TITLE:title;director:P::director;genre:C:FILM:genre;release_year:I:1970-2023:release year;runtime:I:80-200:running time in minutes;rating:R:1-10:rating
product|products|products,inventory,store_items = product_name:U:PRODUCT:product name;category:C:PCAT:category;price:R:1-500:price;stock:I:0-1000:stock quantity;brand:C:BRAND:brand
player|players|players,football_players,team_roster = name:P::name;team:C:TEAM:team;position:C:POS:position;goals:I:0-60:number of goals;age:I:17-40:age;nationality:C:COUNTRY:nationality
city|cities|cities,city_stats,municipalities = city_name:U:CITY:city name;country:C:COUNTRY:country;population:I:50000-9000000:population;area_km2:I:20-3000:area in square kilometres;founded:I:800-1950:founding year
flight|flights|flights,flight_schedule,departures = flight_number:U:CODE:flight number;origin:C:CITY:origin;destination:C:CITY:destination;duration:I:45-900:duration in minutes;fare:I:50-1500:fare;airline:C:AIRLINE:airline
patient|patients|patients,clinic_patients,admissions = name:P::name;ward:C:WARD:ward;age:I:1-99:age;admission_date:D::admission date;days_stayed:I:1-40:number of days stayed;doctor:P::doctor
car|cars|cars,vehicles,used_cars = model:U:PRODUCT:model;make:C:MAKE:make;model_year:I:1995-2024:model year;mileage:I:0-250000:mileage;price:I:1000-90000:price;color:C:COLOR:color
song|songs|songs,tracks,playlist_tracks = title:U:TITLE:title;artist:P::artist;genre:C:MUSIC:genre;duration_seconds:I:90-600:duration in seconds;plays:I:100-5000000:number of plays;release_year:I:1960-2023:release year
restaurant|restaurants|restaurants,eateries,dining_spots = name:U:PLACE:name;cuisine:C:CUISINE:cuisine;city:C:CITY:city;rating:R:1-5:rating;seats:I:10-300:number of seats;avg_price:I:5-120:average price
order|orders|orders,sales_orders,purchases = order_id:I:1000-99999:order ID;customer:P::customer;item:C:ITEM:item;quantity:I:1-50:quantity;total:R:5-2000:total amount;order_date:D::order date;status:C:STATUS:status
course|courses|courses,classes,course_catalog = course_name:U:TITLE:course name;faculty:C:FACULTY:faculty;instructor:P::instructor;credits:I:1-6:number of credits;enrolled:I:5-300:number of enrolled students
hotel|hotels|hotels,hotel_listings,accommodations = hotel_name:U:PLACE:hotel name;city:C:CITY:city;stars:I:1-5:star rating;rooms:I:10-800:number of rooms;nightly_rate:I:40-900:nightly rate
country|countries|countries,nations,country_data = country_name:U:COUNTRY:country name;continent:C:CONT:continent;population_millions:R:1-1400:population in millions;gdp_billions:I:5-25000:GDP in billions;official_language:C:LANG:official language
game|games|video_games,games,game_catalog = title:U:TITLE:title;platform:C:PLATFORM:platform;genre:C:FILM:genre;release_year:I:1985-2024:release year;sales_millions:R:1-40:sales in millions;score:I:30-99:review score
account|accounts|bank_accounts,accounts,customer_accounts = account_number:I:100000-999999:account number;owner:P::owner;branch:C:CITY:branch;balance:R:0-100000:balance;account_type:C:ACCT:account type;opened_date:D::opening date
team|teams|teams,league_table,clubs = team_name:U:PLACE:team name;city:C:CITY:city;wins:I:0-38:number of wins;losses:I:0-38:number of losses;points:I:0-114:points;founded:I:1870-2010:founding year
pet|pets|pets,animals,shelter_animals = pet_name:U:FIRST:name;species:C:SPECIES:species;age:I:0-20:age;weight_kg:R:1-80:weight in kilograms;owner:P::owner;adopted:C:YESNO:adoption status
candidate|candidates|candidates,election_results,ballots = candidate:P::candidate;party:C:PARTY:party;district:C:CITY:district;votes:I:100-500000:number of votes;first_elected:I:1970-2022:year first elected
concert|concerts|concerts,gigs,events = artist:P::artist;venue:C:VENUE:venue;city:C:CITY:city;tickets_sold:I:100-90000:number of tickets sold;ticket_price:R:10-300:ticket price;event_date:D::date
""".strip().splitlines()]  # noqa: E501
_TYPES = [  # declared type names per style: text, int, real, date
    {"T": "VARCHAR", "I": "INTEGER", "R": "REAL", "D": "DATE"},
    {"T": "TEXT", "I": "INT", "R": "FLOAT", "D": "TEXT"},
    {"T": "TEXT", "I": "INTEGER", "R": "DECIMAL", "D": "DATE"},
]
_WORDS = {
    "MAX": ["highest", "maximum", "largest"],
    "MIN": ["lowest", "minimum", "smallest"],
    "AVG": ["average", "mean"],
    "SUM": ["total"],
}
_OPS = {
    ">": ["greater than", "more than", "above"],
    "<": ["less than", "below", "under"],
    ">=": ["at least"],
    "<=": ["at most"],
}


@dataclass
class Column:
    name: str
    kind: str
    arg: str
    phrase: str

    @property
    def numeric(self) -> bool:
        return self.kind in "IR"


@dataclass
class Table:
    name: str
    sing: str
    plural: str
    cols: List[Column]
    rows: List[list]
    types: Dict[str, str]

    def schema(self) -> str:
        kinds = {"P": "T", "C": "T", "U": "T", "I": "I", "R": "R", "D": "D"}
        cols = ", ".join(f"{c.name} {self.types[kinds[c.kind]]}" for c in self.cols)
        return f"CREATE TABLE {self.name} ({cols})"

    def value(self, rng: random.Random, col: Column):
        return rng.choice(self.rows)[self.cols.index(col)]


def _table_names() -> List[str]:
    return [n for d, _ in _DOMAINS for n in d.split("|")[2].split(",")]


def _unique_value(rng: random.Random, pool: str) -> str:
    pick = {k: rng.choice(v) for k, v in _POOLS.items() if k in ("ADJ", "NOUN", "ITEM")}
    made = {
        "TITLE": "The {ADJ} {NOUN}",
        "PRODUCT": "{ADJ} {ITEM}",
        "PLACE": "{NOUN} " + rng.choice(["House", "Club", "Inn", "Lodge"]),
        "CODE": rng.choice("ABCDEFGHKLMNPRSTUZ") + rng.choice("ABEKLMSUXZ"),
    }
    if pool == "CODE":
        return f"{made['CODE']}{rng.randint(100, 999)}"
    return made[pool].format(**pick) if pool in made else rng.choice(_POOLS[pool])


def _column_values(rng: random.Random, col: Column, n: int) -> list:
    if col.kind in "IR":
        lo, hi = (int(x) for x in col.arg.split("-"))
        scale = 10 if col.kind == "R" else 1
        span = range(lo * scale, hi * scale + 1)
        # Distinct numbers keep ORDER BY answers free of ties.
        vals = rng.sample(span, n) if len(span) >= 3 * n else rng.choices(span, k=n)
        return [v / scale if scale > 1 else v for v in vals]
    if col.kind == "D":
        return [
            f"{rng.randint(2008, 2024)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            for _ in range(n)  # day <= 28: valid in every month
        ]
    if col.kind == "P":
        return [person(rng) for _ in range(n)]
    if col.kind == "C":
        few = rng.sample(_POOLS[col.arg], min(len(_POOLS[col.arg]), rng.randint(2, 4)))
        return [rng.choice(few) for _ in range(n)]
    vals = []  # "U": distinct names
    while len(vals) < n:
        v = _unique_value(rng, col.arg)
        vals += [] if v in vals else [v]
    return vals


def random_table(rng: random.Random, split: str) -> Table:
    """A random table whose name belongs to ``split``, filled with 6-12 random rows."""
    names = partition(_table_names(), split)
    if rng.random() < 0.15:  # WikiSQL-style anonymous names, also split by hash
        name = f"table_name_{rng.randint(1, 99999)}"
        while split_of(name) != split:
            name = f"table_name_{rng.randint(1, 99999)}"
        head, spec = rng.choice(_DOMAINS)
    else:
        name = rng.choice(names)
        head, spec = next(d for d in _DOMAINS if name in d[0].split("|")[2].split(","))
    sing, plural, _ = head.split("|")
    cols = [Column(*c.split(":")) for c in spec.split(";")]
    keep = sorted(rng.sample(range(1, len(cols)), rng.randint(2, len(cols) - 1)))
    cols = [cols[0]] + [cols[i] for i in keep]
    n = rng.randint(6, 12)
    data = [_column_values(rng, c, n) for c in cols]
    rows = [list(r) for r in zip(*data)]
    return Table(name, sing, plural, cols, rows, rng.choice(_TYPES))


def _lit(v) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


def _an(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


# Question phrasings by kind; {sing}/{plural} name the table's rows.
_QUESTIONS: Dict[str, List[str]] = {}
for _line in """
lookup_one: What is the {a} of the {sing} whose {b} is {v}?
lookup_one: What {a} does the {sing} with {b} {v} have?
lookup_one: Give the {a} for the {sing} with the {b} {v}.
lookup_many: What are the {a} values of {plural} whose {b} is {v}?
lookup_many: List the {a} of all {plural} with {b} {v}.
filter: List the {a} of {plural} with {cond}.
filter: Which {plural} have {cond}? Give their {a}.
filter: Show the {a} of every {sing} with {cond}.
count: How many {plural} have {cond}?
count: Count the {plural} with {cond}.
count: What is the number of {plural} with {cond}?
aggregate: What is the {word} {c} of {plural}{tail}?
aggregate: Find the {word} {c} among {plural}{tail}.
group_agg: What is the {word} {c} of {plural} for each {b}?
group_count: How many {plural} are there for each {b}?
group_count: For each {b}, count the {plural}.
argmax: Which {b} has the {most} {plural}?
having: Which {b} values have more than {k} {plural}?
distinct: List the distinct {b} values of the {plural}.
distinct: What are the different {b} values among {plural}?
top1: What is the {a} of the {sing} with the {word} {c}?
top1: Which {sing} has the {word} {c}? Give its {a}.
topk: List the {a} of the {k} {plural} with the {word} {c}.
sorted: List the {a} of all {plural}, sorted by {c} {how}.
""".strip().splitlines():
    _kind, _text = _line.split(": ", 1)
    _QUESTIONS.setdefault(_kind, []).append(_text)

# A template returns (question, sql, tie check) or None; a tie check (sql of the sort
# keys, k) demands keys[k-1] != keys[k] (all keys distinct when k is None).
Draft = Optional[Tuple[str, str, Optional[Tuple[str, Optional[int]]]]]


def _ask(rng: random.Random, kind: str, t: Table, **words) -> str:
    return rng.choice(_QUESTIONS[kind]).format(sing=t.sing, plural=t.plural, **words)


def _cols(t: Table, kinds: str, but: Optional[Column] = None) -> List[Column]:
    return [c for c in t.cols if c.kind in kinds and c is not but]


def _numeric_cond(rng: random.Random, t: Table, c: Column) -> Tuple[str, str]:
    op = rng.choice(list(_OPS))
    n = t.value(rng, c)
    return f"{c.name} {op} {n}", f"{_an(c.phrase)} {rng.choice(_OPS[op])} {n}"


def _q_lookup(rng: random.Random, t: Table) -> Draft:
    b = rng.choice(_cols(t, "PU") or _cols(t, "CD") or [None])
    if b is None:
        return None
    a = rng.choice(_cols(t, "PUCDIR", but=b))
    v = t.value(rng, b)
    kind = "lookup_one" if b.kind in "PU" else "lookup_many"  # one row or several
    q = _ask(rng, kind, t, a=a.phrase, b=b.phrase, v=v)
    return q, f"SELECT {a.name} FROM {t.name} WHERE {b.name} = {_lit(v)}", None


def _q_filter(rng: random.Random, t: Table) -> Draft:
    c = rng.choice(_cols(t, "IR") or [None])
    if c is None:
        return None
    a = rng.choice(_cols(t, "PUCDIR", but=c))
    cond, words = _numeric_cond(rng, t, c)
    cats = _cols(t, "C", but=a)
    if cats and rng.random() < 0.5:  # AND with a categorical condition
        b = rng.choice(cats)
        v = t.value(rng, b)
        cond, words = f"{b.name} = {_lit(v)} AND {cond}", f"{b.phrase} {v} and {words}"
    q = _ask(rng, "filter", t, a=a.phrase, cond=words)
    return q, f"SELECT {a.name} FROM {t.name} WHERE {cond}", None


def _q_count(rng: random.Random, t: Table) -> Draft:
    cats, nums = _cols(t, "C"), _cols(t, "IR")
    if cats and (not nums or rng.random() < 0.6):
        b = rng.choice(cats)
        v = t.value(rng, b)
        cond, words = f"{b.name} = {_lit(v)}", f"{b.phrase} {v}"
    elif nums:
        cond, words = _numeric_cond(rng, t, rng.choice(nums))
    else:
        return None
    q = _ask(rng, "count", t, cond=words)
    return q, f"SELECT COUNT(*) FROM {t.name} WHERE {cond}", None


def _q_aggregate(rng: random.Random, t: Table) -> Draft:
    nums, cats = _cols(t, "IR"), _cols(t, "C")
    if not nums:
        return None
    c, fn = rng.choice(nums), rng.choice(list(_WORDS))
    sql, tail = f"SELECT {fn}({c.name}) FROM {t.name}", ""
    if cats and rng.random() < 0.5:
        b = rng.choice(cats)
        v = t.value(rng, b)
        sql, tail = f"{sql} WHERE {b.name} = {_lit(v)}", f" whose {b.phrase} is {v}"
    q = _ask(rng, "aggregate", t, word=rng.choice(_WORDS[fn]), c=c.phrase, tail=tail)
    return q, sql, None


def _q_group(rng: random.Random, t: Table) -> Draft:
    cats, nums = _cols(t, "C"), _cols(t, "IR")
    if not cats:
        return None
    b = rng.choice(cats)
    kind = rng.choice(["group_count", "group_agg", "argmax", "having", "distinct"])
    head = f"SELECT {b.name}"
    group = f"FROM {t.name} GROUP BY {b.name}"
    if kind == "group_agg" and nums:
        c, fn = rng.choice(nums), rng.choice(list(_WORDS))
        q = _ask(rng, kind, t, word=rng.choice(_WORDS[fn]), c=c.phrase, b=b.phrase)
        return q, f"{head}, {fn}({c.name}) {group}", None
    if kind == "argmax":
        order, most = rng.choice([("DESC", "most"), ("ASC", "fewest")])
        check = f"SELECT COUNT(*) AS n {group} ORDER BY n {order}"
        q = _ask(rng, kind, t, b=b.phrase, most=most)
        return q, f"{head} {group} ORDER BY COUNT(*) {order} LIMIT 1", (check, 1)
    if kind == "having":
        k = rng.randint(1, 3)
        q = _ask(rng, kind, t, b=b.phrase, k=k)
        return q, f"{head} {group} HAVING COUNT(*) > {k}", None
    if kind == "distinct":
        q = _ask(rng, kind, t, b=b.phrase)
        return q, f"SELECT DISTINCT {b.name} FROM {t.name}", None
    q = _ask(rng, "group_count", t, b=b.phrase)
    return q, f"{head}, COUNT(*) {group}", None


def _q_order(rng: random.Random, t: Table) -> Draft:
    c = rng.choice(_cols(t, "IR") or [None])
    if c is None:
        return None
    a = rng.choice(_cols(t, "PUCDIR", but=c))
    order, word, how = rng.choice(
        [
            ("DESC", "highest", "from highest to lowest"),
            ("ASC", "lowest", "from lowest to highest"),
        ]
    )
    check = f"SELECT {c.name} FROM {t.name} ORDER BY {c.name} {order}"
    sql = f"SELECT {a.name} FROM {t.name} ORDER BY {c.name} {order}"
    kind = rng.choice(["top1", "topk", "sorted"])
    k = 1 if kind == "top1" else rng.randint(2, 5)
    q = _ask(rng, kind, t, a=a.phrase, c=c.phrase, word=word, k=k, how=how)
    if kind == "sorted":
        return q, sql, (check, None)
    return q, f"{sql} LIMIT {k}", (check, k)


_TEMPLATES: List[Callable[[random.Random, Table], Draft]] = [
    _q_lookup,
    _q_filter,
    _q_count,
    _q_aggregate,
    _q_group,
    _q_order,
]
_PROMPTS = [
    "Given the table definition below, write an SQL query that answers the question."
    "\n\nTable: {schema}\nQuestion: {question}",
    "{schema}\n\nUsing the table above, write a SQL query to answer: {question}",
    "Question: {question}\nContext: {schema}\n\nWrite the SQL query. Answer with the "
    "query only.",
]


def _connect(schema_sql: str, rows: Union[Sequence[Sequence], Mapping[str, Sequence]]):
    conn = sqlite3.connect(":memory:")
    steps = [0]

    def budget() -> int:  # abort runaway predictions (cross joins) after ~10M VM steps
        steps[0] += 1
        return int(steps[0] > 1000)

    conn.set_progress_handler(budget, 10000)
    conn.executescript(schema_sql)
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
    ]
    by_table = rows if isinstance(rows, Mapping) else {tables[0]: rows}
    for name, data in by_table.items():
        for row in data:
            marks = ", ".join("?" * len(row))
            conn.execute(f'INSERT INTO "{name}" VALUES ({marks})', list(row))
    return conn


def _canon(result: List[tuple]) -> List[tuple]:
    return [
        tuple(round(v, 6) if isinstance(v, float) else v for v in r) for r in result
    ]


def execution_match(
    pred_sql: str,
    gold_sql: str,
    schema_sql: str,
    rows: Union[Sequence[Sequence], Mapping[str, Sequence]],
) -> bool:
    """Whether ``pred_sql`` returns the same result as ``gold_sql`` on the given data.

    Args:
        pred_sql: The predicted query (a query that fails to run does not match).
        gold_sql: The reference query.
        schema_sql: ``CREATE TABLE`` statement(s).
        rows: The rows of the single table, or ``{table name: rows}``.

    Returns:
        True when the results are equal: as lists if the gold query has an
        ``ORDER BY``, as multisets otherwise (floats compared to 6 decimals).
    """
    conn = _connect(schema_sql, rows)
    try:
        gold = _canon(conn.execute(gold_sql).fetchall())
        try:
            pred = _canon(conn.execute(pred_sql).fetchall())
        except (sqlite3.Error, sqlite3.Warning, ValueError):
            return False
    finally:
        conn.close()
    ordered = sqlglot.parse_one(gold_sql, read="sqlite").find(exp.Order) is not None
    return (
        pred == gold if ordered else sorted(map(repr, pred)) == sorted(map(repr, gold))
    )


def normalize_sql(sql: str) -> str:
    """Canonical text of a query (sqlglot, sqlite dialect, identifiers lower-cased)."""
    return sqlglot.parse_one(sql.strip().rstrip(";"), read="sqlite").sql(
        dialect="sqlite", normalize=True
    )


def exact_match(pred_sql: str, gold_sql: str) -> bool:
    """Whether two queries are equal after ``normalize_sql`` (unparsable: False)."""
    try:
        return normalize_sql(pred_sql) == normalize_sql(gold_sql)
    except sqlglot.errors.SqlglotError:
        return False


def extract_sql(text: str) -> str:
    """The first query in a model's answer (inside a ```sql fence or from SELECT on)."""
    fence = re.search(r"```(?:sql)?\s*(.*?)```", text, re.S | re.I)
    body = fence.group(1) if fence else text
    m = re.search(r"\b(SELECT|WITH)\b.*?(;|\n\n|$)", body, re.S | re.I)
    return (m.group(0) if m else body).strip().rstrip(";").strip()


def _verified(t: Table, sql: str, check) -> bool:
    try:
        sqlglot.parse_one(t.schema(), read="sqlite")
        sqlglot.parse_one(sql, read="sqlite")
        conn = _connect(t.schema(), t.rows)
        result = conn.execute(sql).fetchall()
        keys = [r[0] for r in conn.execute(check[0]).fetchall()] if check else []
        conn.close()
    except (sqlglot.errors.SqlglotError, sqlite3.Error):
        return False
    if not result or result[0][0] in (
        None,
        0,
    ):  # empty answers cannot tell queries apart
        return False
    if check and check[1] is None:
        return len(set(keys)) == len(keys)
    return not check or len(keys) <= check[1] or keys[check[1] - 1] != keys[check[1]]


def _sample(rng: random.Random, split: str) -> Optional[dict]:
    t = random_table(rng, split)
    draft = rng.choice(_TEMPLATES)(rng, t)
    if draft is None or not _verified(t, draft[1], draft[2]):
        return None
    question, sql, _ = draft
    schema = t.schema()
    return {
        "key": f"{schema} || {question}",
        "prompt": rng.choice(_PROMPTS).format(schema=schema, question=question),
        "completion": sql,
        "meta": {
            "schema": schema,
            "question": question,
            "table": t.name,
            "rows": t.rows,
        },
    }


def generate(split: str, n: int, seed: int = 0) -> List[dict]:
    """``n`` verified text-to-SQL examples for ``split`` (see ``mlx_specstream.train.datasets``)."""
    return generate_unique(TASK, split, n, seed, _sample)
