"""Guess My City (LMRL-Gym): the agent asks free-text questions to find a hidden world city.

The cities are shipped in ``langrl/data/cities.json`` (81 cities: country, continent, population band, coastal,
capital, main language, climate, hemisphere, a famous landmark). The simulated user is a rule-based answerer
(:class:`CityAnswerer`) that replies in free text from the table:

- a **guess** naming a city ("Is it Paris?", "Is it in Tokyo?", "My guess is Rio", or a question naming exactly
  one city and asking nothing else) is answered "Yes! It is Paris." (success, the episode ends) or "No, it is not
  Paris." (that city is ruled out).
- otherwise keywords pick **fields** (:data:`KEYWORDS`): continent/where -> "It is in Europe."; country/nation ->
  "It is in France."; language/speak -> "The main language is French."; coast/sea/ocean/beach -> "Yes, it is on
  the coast." / "No, it is not on the coast."; capital -> "Yes, it is a capital city." / "No, it is not a capital
  city."; big/population/people -> "It has over 10 million people."; climate/weather/cold/hot -> "The climate is
  oceanic: mild and often rainy all year."; landmark/famous -> "It is famous for the Eiffel Tower.";
  hemisphere/equator -> "It is in the northern hemisphere."
- a question naming a **value** of a field ("Is it in Asia?", "Do they speak Spanish?", "Is it in Japan?", "Is
  the climate tropical?", "Is it in the southern hemisphere?") gets a yes/no sentence about that value only
  ("No, it is not in Asia."). When a question names any value, open keywords of other fields are not answered
  ("Is it in a Spanish-speaking country?" answers the language, not the country); coast and capital always are.
  Several fields are answered with one sentence each, in the order the question asks them.
- anything else -> "I can't say."

The answerer never says the hidden city's name before it is guessed, and says its country only when asked about
the country ("Which country?" -> "It is in France."; "Is it in France?" -> "Yes, it is in France."): no landmark
of the table holds the city's or the country's name (a test checks it). Revealing the country on request is this
environment's choice (LMRL-Gym's oracle does the same); the city name is the only thing a questioner must guess.

Candidates are the cities consistent with everything revealed so far; a turn's information gain is
log2(|before| / |after|) bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from langrl.envs.dialogue.base import (
    GUESS_PREFIXES,
    PhraseMatcher,
    Reply,
    SimulatedUserEnv,
    cached_data,
    check_int,
    normalize,
    pick_subset,
    split_guess,
)

DATA_FILE = "cities.json"
FIELDS = ("continent", "country", "language", "coastal", "capital", "population", "climate", "landmark",
          "hemisphere")
BOOLEAN_FIELDS = frozenset({"coastal", "capital"})
# Words that ask about a field without naming a value (normalized; regular plurals match too).
KEYWORDS: dict[str, tuple[str, ...]] = {
    "continent": ("continent", "where", "part of the world", "region", "located", "location", "whereabouts"),
    "country": ("country", "nation", "which country", "what country"),
    "language": ("language", "speak", "spoken", "speaking", "tongue", "people speak", "do they speak",
                 "do people speak"),
    "coastal": ("coast", "coastal", "sea", "ocean", "beach", "seaside", "port", "harbour", "harbor", "shore",
                "on the water"),
    "capital": ("capital", "capital city", "seat of government"),
    "population": ("population", "populous", "people", "inhabitants", "residents", "big", "bigger", "large",
                   "larger", "small", "smaller", "huge", "size", "how many", "million", "crowded", "megacity"),
    "climate": ("climate", "weather", "cold", "hot", "warm", "temperature", "rain", "rainy", "snow", "snowy",
                "humid", "dry", "sunny", "winter", "summer"),
    "landmark": ("landmark", "famous", "known for", "monument", "attraction", "sight", "tourist", "visit",
                 "building", "famous for", "well known"),
    "hemisphere": ("hemisphere", "equator"),
}
# Other names of field values: phrase -> (field, the values it means, how a reply names them).
VALUE_ALIASES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "australasia": ("continent", ("Oceania",), "Oceania"),
    "european": ("continent", ("Europe",), "Europe"),
    "asian": ("continent", ("Asia",), "Asia"),
    "african": ("continent", ("Africa",), "Africa"),
    "usa": ("country", ("United States",), "the United States"),
    "america": ("country", ("United States",), "the United States"),
    "united states of america": ("country", ("United States",), "the United States"),
    "uk": ("country", ("United Kingdom",), "the United Kingdom"),
    "britain": ("country", ("United Kingdom",), "the United Kingdom"),
    "great britain": ("country", ("United Kingdom",), "the United Kingdom"),
    "holland": ("country", ("Netherlands",), "the Netherlands"),
    "korea": ("country", ("South Korea",), "South Korea"),
    "czechia": ("country", ("Czech Republic",), "the Czech Republic"),
    "uae": ("country", ("United Arab Emirates",), "the United Arab Emirates"),
    "emirates": ("country", ("United Arab Emirates",), "the United Arab Emirates"),
    "congo": ("country", ("Democratic Republic of the Congo",), "the Democratic Republic of the Congo"),
    "drc": ("country", ("Democratic Republic of the Congo",), "the Democratic Republic of the Congo"),
    "chinese": ("language", ("Mandarin", "Cantonese"), "Chinese"),
    "farsi": ("language", ("Persian",), "Persian"),
    "tagalog": ("language", ("Filipino",), "Filipino"),
    "subtropical": ("climate", ("humid subtropical", "subtropical highland"), "subtropical"),
    "arid": ("climate", ("desert",), "desert"),
    "north of the equator": ("hemisphere", ("northern",), "the northern hemisphere"),
    "south of the equator": ("hemisphere", ("southern",), "the southern hemisphere"),
    "northern hemisphere": ("hemisphere", ("northern",), "the northern hemisphere"),
    "southern hemisphere": ("hemisphere", ("southern",), "the southern hemisphere"),
}
CLIMATES: dict[str, str] = {
    "tropical": "hot and humid all year",
    "desert": "very dry, with little rain",
    "mediterranean": "warm dry summers and mild wet winters",
    "oceanic": "mild and often rainy all year",
    "humid subtropical": "hot humid summers and mild winters",
    "continental": "warm summers and cold winters",
    "subarctic": "short cool summers and long cold winters",
    "subtropical highland": "mild all year because of its altitude",
}
PREFIXES = GUESS_PREFIXES | {"is it in", "its in", "it is in", "is the city", "the city is", "is your city",
                             "your city is", "is it the city of", "are you in", "do you live in", "you live in"}
UNCLEAR = "I can't say."


def with_the(country: str) -> str:
    """``"the United States"``, ``"France"``."""
    plural_or_union = country.startswith(("United ", "Czech ", "Democratic ")) or country in {"Netherlands",
                                                                                           "Philippines"}
    return f"the {country}" if plural_or_union else country


def value_name(field: str, value: str) -> str:
    """How a reply names a value of ``field`` ("the United States", "the northern hemisphere", "French")."""
    if field == "country":
        return with_the(value)
    if field == "hemisphere":
        return f"the {value} hemisphere"
    return value


@dataclass(frozen=True)
class Ask:
    """One thing a question asks: ``field``, and ``values`` (a set of field values it names) or ``None`` (an open
    question about the field); ``name`` is how a reply names the values."""

    field: str
    values: frozenset[Any] | None = None
    name: str = ""


@dataclass(frozen=True)
class CityQuestion:
    """A parsed utterance: ``kind`` ``guess`` (``guess``: a city's name), ``fields`` (``asks``) or ``unclear``."""

    kind: str
    asks: tuple[Ask, ...] = ()
    guess: str | None = None


def open_answer(field: str, city: Mapping[str, Any]) -> str:
    """The reply to an open question about ``field`` of ``city``."""
    value = city[field]
    if field in BOOLEAN_FIELDS:
        what = "on the coast" if field == "coastal" else "a capital city"
        return f"Yes, it is {what}." if value else f"No, it is not {what}."
    templates = {
        "continent": "It is in {}.", "country": "It is in {}.", "language": "The main language is {}.",
        "population": "It has {} people.", "climate": "The climate is {}.", "landmark": "It is famous for {}.",
        "hemisphere": "It is in {}.",
    }
    if field == "climate":
        value = f"{value}: {CLIMATES.get(value, value)}"
    return templates[field].format(value_name(field, value) if field in ("country", "hemisphere") else value)


def value_answer(ask: Ask, yes: bool) -> str:
    """The yes/no reply to a question naming values of a field ("No, it is not in Asia.")."""
    head, negation = ("Yes, ", "") if yes else ("No, ", "not ")
    if ask.field == "language":
        return f"{head}the main language is {negation}{ask.name}."
    if ask.field == "climate":
        return f"{head}the climate is {negation}{ask.name}."
    if ask.field == "population":
        return f"{head}it has {ask.name} people." if yes else f"{head}it does not have {ask.name} people."
    return f"{head}it is {negation}in {ask.name}."


class CityAnswerer:
    """The rule-based simulated user of Guess My City (see the module docstring for the rules)."""

    def __init__(self, cities: Sequence[Mapping[str, Any]]):
        self.cities = list(cities)
        self.names: dict[str, int] = {}
        for i, city in enumerate(self.cities):
            for name in (city["name"], *city.get("aliases", ())):
                self.names.setdefault(" ".join(normalize(name)), i)
        self.city_matcher = PhraseMatcher(self.names.items(), plurals=False)
        table: list[tuple[str, Ask]] = [(p, Ask(f)) for f, phrases in KEYWORDS.items() for p in phrases]
        table += [(p, Ask(f, frozenset(v), n)) for p, (f, v, n) in VALUE_ALIASES.items()]
        for f in ("continent", "country", "language", "climate", "hemisphere", "population"):
            for value in sorted({str(c[f]) for c in self.cities}):
                table.append((value, Ask(f, frozenset({value}), value_name(f, value))))
        # A named value wins over a keyword of the same words ("capital" is a keyword, "Spanish" a value).
        values_first = sorted(table, key=lambda item: item[1].values is None)
        self.matcher = PhraseMatcher(values_first)

    def parse(self, text: str) -> CityQuestion:
        """The question ``text`` asks."""
        words = normalize(text)
        for _, _, thing in split_guess(words, PREFIXES):
            if thing in self.names:
                return CityQuestion("guess", guess=self.cities[self.names[thing]]["name"])
        mentions = self.city_matcher.find(words)
        blocked = [i for start, end, _ in mentions for i in range(start, end)]
        asks = [ask for _, _, ask in self.matcher.find(words, blocked)]
        if any(ask.values is not None for ask in asks):
            asks = [a for a in asks if a.values is not None or a.field in BOOLEAN_FIELDS]
        asks = list(dict.fromkeys(asks))
        if asks:
            return CityQuestion("fields", tuple(asks))
        named = {index for _, _, index in mentions}
        if len(named) == 1:
            return CityQuestion("guess", guess=self.cities[named.pop()]["name"])
        return CityQuestion("unclear")

    def answer(self, question: CityQuestion, city: Mapping[str, Any]) -> str:
        """The reply to ``question`` when the hidden city is ``city``."""
        if question.kind == "guess":
            right = question.guess == city["name"]
            return f"Yes! It is {city['name']}." if right else f"No, it is not {question.guess}."
        if question.kind == "fields":
            return " ".join(value_answer(a, city[a.field] in a.values) if a.values is not None
                            else open_answer(a.field, city) for a in question.asks)
        return UNCLEAR

    def consistent(self, question: CityQuestion, city: Mapping[str, Any], hidden: Mapping[str, Any]) -> bool:
        """Whether ``city`` gives the same reply as the ``hidden`` city (so stays a candidate)."""
        if question.kind == "guess":
            return (city["name"] == question.guess) == (hidden["name"] == question.guess)
        if question.kind == "fields":
            for ask in question.asks:
                if ask.values is None and city[ask.field] != hidden[ask.field]:
                    return False
                if ask.values is not None and (city[ask.field] in ask.values) != (hidden[ask.field] in ask.values):
                    return False
        return True


@cache
def shipped_cities() -> tuple[Mapping[str, Any], ...]:
    """The shipped cities (``langrl/data/cities.json``)."""
    return tuple(cached_data(DATA_FILE)["cities"])


@cache
def shipped_answerer() -> CityAnswerer:
    """The answerer over the shipped cities."""
    return CityAnswerer(shipped_cities())


def parse_city_question(text: str) -> CityQuestion:
    """How the simulated user reads ``text`` (shipped cities)."""
    return shipped_answerer().parse(text)


def answer_about(city: str, text: str) -> str:
    """The simulated user's reply to ``text`` when the hidden city is ``city`` (a shipped city's name)."""
    answerer = shipped_answerer()
    return answerer.answer(answerer.parse(text), answerer.cities[answerer.names[" ".join(normalize(city))]])


class GuessMyCity(SimulatedUserEnv):
    """Guess My City: find the hidden city with free-text questions (see the module docstring).

    ``num_cities``: ``None`` (all shipped cities), k (the first k of a fixed order shuffled with ``order_seed``)
    or a list of city names. ``max_turns`` turns truncate an episode.
    """

    def __init__(self, num_cities: int | Sequence[str] | None = None, max_turns: int = 20,
                 success_reward: float = 1.0, question_cost: float = 0.05, shaping: float = 0.0,
                 order_seed: int = 0):
        super().__init__(max_turns=max_turns, success_reward=success_reward, question_cost=question_cost,
                         shaping=shaping)
        self.order_seed = check_int("order_seed", order_seed, 0, 0)
        self.answerer = shipped_answerer()
        every = self.answerer.cities
        picked = pick_subset("num_cities", num_cities, [c["name"] for c in every], self.answerer.names,
                             self.order_seed, "city")
        self.cities = [every[i] for i in picked]
        self.names = [c["name"] for c in self.cities]

    @property
    def target_names(self) -> list[str]:
        return self.names

    def target_index(self, name: str) -> int:
        """The target id of a city name or alias."""
        index = self.answerer.names.get(" ".join(normalize(name)))
        if index is not None and self.answerer.cities[index]["name"] in self.names:
            return self.names.index(self.answerer.cities[index]["name"])
        return super().target_index(name)

    def opening(self) -> str:
        return (f"I am thinking of a city. Ask me questions about it to find out which city it is, and guess it when "
                f"you know. You have {self.max_turns} turns.")

    def respond(self, utterance: str, target: int) -> Reply:
        question = self.answerer.parse(utterance)
        hidden = self.cities[target]
        text = self.answerer.answer(question, hidden)
        if question.kind == "unclear":
            return Reply(text, kind="unclear")
        solved = question.kind == "guess" and question.guess == hidden["name"]
        kind = "guess" if question.kind == "guess" else "question"
        return Reply(text, keep=lambda c: self.answerer.consistent(question, self.cities[c], hidden), solved=solved,
                     kind=kind)
