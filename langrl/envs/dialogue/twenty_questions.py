"""Twenty Questions (LMRL-Gym style): the agent asks yes/no questions to find a hidden everyday object.

The objects and their attributes are shipped in ``langrl/data/twenty_questions.json`` (119 objects, 37 boolean
attributes; every object has every attribute and no two objects share an attribute vector, so every object can
be told apart by questions alone). The simulated user is a rule-based :class:`Oracle`:

- a **guess** is recognised first: "Is it a cat?", "Is it an apple?", "cat?", "My guess is the piano", "I think
  it's bread" (an opening, an optional article, then exactly an object's name, alias or plural). A bare colour
  word after "is it" is a colour question, not a guess: "Is it orange?" is not a guess of the orange, "Is it an
  orange?" is. The right object -> "Yes! It is a <name>." and the episode ends with success; any other object ->
  "No." and that object is ruled out.
- otherwise the question is mapped to **attributes** by the phrase table :data:`PHRASES` (e.g. "alive",
  "living" -> ``living``; "eat", "edible", "food" -> ``food``; "bigger than a breadbox", "big", "large" ->
  ``bigger_than_a_breadbox``) and :data:`NEGATED` (phrases meaning an attribute's opposite: "small", "tiny",
  "outdoors", "inanimate"). Object names in the question are skipped ("Is it bigger than a car?" asks
  ``bigger_than_a_breadbox``). Several attributes are read as a conjunction ("Is it an animal that can fly?"),
  or as a disjunction when the question holds "or"; the reply is "Yes." or "No." from the hidden object.
  Negation words ("Isn't it ...") are ignored, as people mean the same question.
- a question that names exactly one object but no attribute ("Could the answer be a cat?") is a guess of it.
- anything else -> "I can't answer that." (the turn is spent and gains no information).

Candidates are the objects consistent with every answer so far; a turn's information gain is
log2(|before| / |after|) bits. :func:`optimal_questioner` is the greedy policy that asks, in the oracle's own
phrasing (:data:`QUESTIONS`), the attribute splitting the candidates most evenly and guesses when one candidate
is left. Its mean over all targets is compared with the information-theoretic bound: no yes/no questioner can
identify every one of N equally likely objects in fewer than ceil(log2 N) questions in the worst case, nor in
fewer than log2 N questions on average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from langrl.envs.dialogue.base import (
    ARTICLES,
    COLOUR_PREFIXES,
    GUESS_PREFIXES,
    PhraseMatcher,
    Reply,
    SimulatedUserEnv,
    cached_data,
    check_int,
    normalize,
    pick_subset,
    plural_forms,
    split_guess,
)
from langrl.errors import ConfigError

DATA_FILE = "twenty_questions.json"

# Phrases (normalized like questions; regular plurals match too) whose "yes" is the attribute's value.
PHRASES: dict[str, tuple[str, ...]] = {
    "living": ("alive", "living", "living thing", "organism", "life form", "lifeform", "biological", "breathe",
               "breathes"),
    "animal": ("animal", "creature", "beast", "fauna", "wildlife"),
    "mammal": ("mammal", "fur", "furry"),
    "bird": ("bird", "feather", "feathered"),
    "fish": ("fish",),
    "insect": ("insect", "bug"),
    "plant": ("plant", "vegetation", "flora", "botanical"),
    "food": ("food", "eat", "edible", "eaten", "eatable", "snack", "meal", "tasty", "delicious", "can you eat"),
    "fruit": ("fruit",),
    "vegetable": ("vegetable", "veggie", "veg"),
    "sweet": ("sweet", "sugar", "sugary", "dessert", "candy"),
    "red": ("red", "red coloured", "red colored", "colour red", "color red"),
    "tool": ("tool", "utensil", "implement"),
    "furniture": ("furniture", "furnishing", "piece of furniture"),
    "vehicle": ("vehicle", "transport", "transportation", "means of transport", "drive", "driven", "driving",
                "travel in", "carry people", "carries people", "passenger"),
    "electronic": ("electronic", "electronics", "electric", "electrical", "electricity", "battery", "plug",
                   "plugged in", "power", "powered", "appliance", "gadget", "digital", "switch on", "turn on"),
    "has_screen": ("screen", "display", "monitor", "touchscreen"),
    "clothing": ("clothing", "clothes", "garment", "wear", "wearable", "worn", "apparel", "outfit", "accessory",
                 "put on"),
    "musical_instrument": ("musical instrument", "instrument", "music", "musical", "make music", "play music"),
    "sports": ("sport", "sporting", "athletic", "athletics", "exercise", "game"),
    "bigger_than_a_breadbox": ("bigger than a breadbox", "bigger than a bread box", "larger than a breadbox",
                               "larger than a bread box", "breadbox", "bread box", "big", "bigger", "large",
                               "larger", "huge", "enormous", "giant"),
    "found_indoors": ("indoors", "indoor", "inside", "found inside", "in a house", "in the house", "in a home",
                      "in the home", "at home", "in your home", "in a building", "household", "in a room",
                      "in the room", "living room", "bedroom", "bathroom"),
    "made_of_metal": ("metal", "metallic", "steel", "iron", "aluminium", "aluminum"),
    "made_of_wood": ("wood", "wooden", "timber"),
    "made_of_glass": ("glass",),
    "made_of_plastic": ("plastic",),
    "made_of_fabric": ("fabric", "cloth", "cotton", "wool", "woollen", "woolen", "textile"),
    "can_fly": ("fly", "flies", "flying", "flight", "airborne", "in the air", "in the sky"),
    "lives_in_water": ("water", "aquatic", "swim", "swimming", "underwater", "in the sea", "in the ocean", "sea",
                       "ocean", "river", "lake", "marine"),
    "has_legs": ("leg",),
    "has_wheels": ("wheel", "wheeled"),
    "pet": ("pet", "kept as a pet", "household pet"),
    "farm": ("farm", "farmyard", "barnyard", "livestock", "farmer", "farming", "agriculture", "agricultural"),
    "kitchen": ("kitchen", "cooking", "cook", "cookware", "kitchenware"),
    "sharp": ("sharp", "blade", "cut", "cutting", "pointy", "spiky", "spike", "prickly", "thorn"),
    "round": ("round", "circular", "circle", "sphere", "spherical", "ball", "ball shaped", "disc"),
    "carnivore": ("carnivore", "carnivorous", "eat meat", "meat eater", "meat eating", "predator", "hunt",
                  "hunter", "eat other animals"),
}
# Phrases whose "yes" is the attribute's opposite ("Is it small?" asks not bigger_than_a_breadbox).
NEGATED: dict[str, tuple[str, ...]] = {
    "living": ("inanimate", "non living", "nonliving", "not alive", "dead", "lifeless"),
    "bigger_than_a_breadbox": ("smaller than a breadbox", "smaller than a bread box", "small", "smaller", "tiny",
                               "little", "fit in your hand", "fits in your hand", "fit in a pocket",
                               "fits in a pocket", "handheld"),
    "found_indoors": ("outdoors", "outdoor", "outside", "in the wild", "in nature"),
}
# The oracle's own phrasing of each attribute: what the greedy questioner asks.
QUESTIONS: dict[str, str] = {
    "living": "Is it alive?", "animal": "Is it an animal?", "mammal": "Is it a mammal?", "bird": "Is it a bird?",
    "fish": "Is it a fish?", "insect": "Is it an insect?", "plant": "Is it a plant?", "food": "Can you eat it?",
    "fruit": "Is it a fruit?", "vegetable": "Is it a vegetable?", "sweet": "Is it sweet?", "red": "Is it red?",
    "tool": "Is it a tool?", "furniture": "Is it furniture?", "vehicle": "Is it a vehicle?",
    "electronic": "Does it use electricity?", "has_screen": "Does it have a screen?", "clothing": "Do you wear it?",
    "musical_instrument": "Is it a musical instrument?", "sports": "Is it used in sports?",
    "bigger_than_a_breadbox": "Is it bigger than a breadbox?", "found_indoors": "Is it usually found indoors?",
    "made_of_metal": "Is it made of metal?", "made_of_wood": "Is it made of wood?",
    "made_of_glass": "Is it made of glass?", "made_of_plastic": "Is it made of plastic?",
    "made_of_fabric": "Is it made of fabric?", "can_fly": "Can it fly?", "lives_in_water": "Does it live in water?",
    "has_legs": "Does it have legs?", "has_wheels": "Does it have wheels?", "pet": "Is it kept as a pet?",
    "farm": "Is it found on a farm?", "kitchen": "Is it used in the kitchen?", "sharp": "Is it sharp?",
    "round": "Is it round?", "carnivore": "Does it eat meat?",
}
COLOUR_WORDS = frozenset({"red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white",
                          "grey", "gray", "gold", "golden", "silver"})
PREFIXES = GUESS_PREFIXES | {"is the object", "the object is", "is your object", "your object is", "is the thing",
                             "the thing is", "is the answer", "the answer is"}
UNCLEAR = "I can't answer that."


@dataclass(frozen=True)
class TQObject:
    """One object: its name, the article its answer uses ("an", "a" or "" for "It is bread."), its aliases and
    every attribute."""

    name: str
    article: str
    aliases: tuple[str, ...]
    attributes: Mapping[str, bool] = field(hash=False)

    def phrase(self) -> str:
        """``"an apple"``, ``"bread"``."""
        return f"{self.article} {self.name}".strip()


@dataclass(frozen=True)
class KnowledgeBase:
    """Every object and attribute of a Twenty Questions data file."""

    attributes: tuple[str, ...]
    descriptions: Mapping[str, str] = field(hash=False)
    objects: tuple[TQObject, ...] = ()

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> KnowledgeBase:
        """Read the JSON structure of ``twenty_questions.json``; a `ConfigError` when an object lacks an
        attribute."""
        attributes = tuple(data["attributes"])
        objects = []
        for record in data["objects"]:
            values = record["attributes"]
            missing = [a for a in attributes if not isinstance(values.get(a), bool)]
            if missing:
                raise ConfigError(f"{DATA_FILE}: object {record['name']!r} has no true/false value for "
                                  f"{', '.join(missing)}; give every object every attribute")
            objects.append(TQObject(record["name"], record.get("article", "a"), tuple(record.get("aliases", ())),
                                    {a: values[a] for a in attributes}))
        return cls(attributes, dict(data["attributes"]), tuple(objects))

    def forms(self) -> dict[str, int]:
        """Every normalized way to name an object (name, aliases, their plurals) -> object index."""
        table: dict[str, int] = {}
        for i, obj in enumerate(self.objects):
            for name in (obj.name, *obj.aliases):
                words = normalize(name)
                for form in (words, *[[*words[:-1], p] for p in plural_forms(words[-1])]):
                    key = " ".join(form)
                    if table.setdefault(key, i) != i and form == words:
                        raise ConfigError(f"{DATA_FILE}: {name!r} names both {self.objects[table[key]].name!r} "
                                          f"and {obj.name!r}; give each object its own names")
        return table


@cache
def knowledge_base() -> KnowledgeBase:
    """The shipped objects (``langrl/data/twenty_questions.json``)."""
    return KnowledgeBase.from_data(cached_data(DATA_FILE))


@dataclass(frozen=True)
class Question:
    """A parsed utterance. ``kind``: ``attribute`` (``literals``: (attribute, wanted value) pairs combined with
    ``mode`` ``all`` or ``any``), ``guess`` (``guess``: the object's name) or ``unclear``."""

    kind: str
    literals: tuple[tuple[str, bool], ...] = ()
    mode: str = "all"
    guess: str | None = None

    def holds(self, attributes: Mapping[str, bool]) -> bool:
        """The true answer to an attribute question for an object with ``attributes``."""
        values = [attributes[name] == wanted for name, wanted in self.literals]
        return any(values) if self.mode == "any" else all(values)


class Oracle:
    """The rule-based simulated user's reading of questions (see the module docstring for the rules)."""

    def __init__(self, kb: KnowledgeBase):
        self.kb = kb
        self.names = kb.forms()
        self.object_matcher = PhraseMatcher(self.names.items(), plurals=False)
        table = [(p, (a, True)) for a, phrases in PHRASES.items() if a in kb.attributes for p in phrases]
        table += [(p, (a, False)) for a, phrases in NEGATED.items() if a in kb.attributes for p in phrases]
        self.attribute_matcher = PhraseMatcher(sorted(table, key=lambda item: -len(item[0])))

    @staticmethod
    def bare_colour(words: Sequence[str], start: int, end: int) -> bool:
        """Whether ``words[start:end]`` is a colour word without an article before it ("is it orange")."""
        return " ".join(words[start:end]) in COLOUR_WORDS and (start == 0 or words[start - 1] not in ARTICLES)

    def parse(self, text: str) -> Question:
        """The question ``text`` asks."""
        words = normalize(text)
        for prefix, article, thing in split_guess(words, PREFIXES):
            index = self.names.get(thing)
            if index is None or (not article and prefix in COLOUR_PREFIXES and thing in COLOUR_WORDS):
                continue
            return Question("guess", guess=self.kb.objects[index].name)
        mentions = self.object_matcher.find(words)
        blocked = [i for start, end, _ in mentions for i in range(start, end)]
        literals = list(dict.fromkeys(value for _, _, value in self.attribute_matcher.find(words, blocked)))
        if literals:
            return Question("attribute", tuple(literals), "any" if "or" in words else "all")
        named = {index for start, end, index in mentions if not self.bare_colour(words, start, end)}
        if len(named) == 1:
            return Question("guess", guess=self.kb.objects[named.pop()].name)
        return Question("unclear")


@cache
def shipped_oracle() -> Oracle:
    """The oracle over the shipped objects."""
    return Oracle(knowledge_base())


def parse_question(text: str) -> Question:
    """How the simulated user reads ``text`` (shipped objects)."""
    return shipped_oracle().parse(text)


class TwentyQuestions(SimulatedUserEnv):
    """Twenty Questions: find the hidden object with yes/no questions (see the module docstring).

    ``num_objects``: ``None`` (all shipped objects), k (the first k objects of a fixed order shuffled with
    ``order_seed``: a curriculum) or a list of object names. ``max_turns`` turns truncate an episode.
    """

    def __init__(self, num_objects: int | Sequence[str] | None = None, max_turns: int = 20,
                 success_reward: float = 1.0, question_cost: float = 0.05, shaping: float = 0.0,
                 order_seed: int = 0):
        super().__init__(max_turns=max_turns, success_reward=success_reward, question_cost=question_cost,
                         shaping=shaping)
        self.order_seed = check_int("order_seed", order_seed, 0, 0)
        self.oracle = shipped_oracle()
        kb = self.oracle.kb
        picked = pick_subset("num_objects", num_objects, [o.name for o in kb.objects], self.oracle.names,
                             self.order_seed, "object")
        self.objects = [kb.objects[i] for i in picked]
        self.names = [o.name for o in self.objects]

    @property
    def target_names(self) -> list[str]:
        return self.names

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attributes the oracle can answer."""
        return self.oracle.kb.attributes

    def target_index(self, name: str) -> int:
        """The target id of an object name or alias."""
        index = self.oracle.names.get(" ".join(normalize(name)))
        if index is not None and self.oracle.kb.objects[index].name in self.names:
            return self.names.index(self.oracle.kb.objects[index].name)
        return super().target_index(name)

    def expert_policy(self) -> GreedyQuestioner:
        """The greedy questioner over this game's objects (`langrl eval ... --model expert` plays it)."""
        return GreedyQuestioner(self.objects, self.attributes)

    def opening(self) -> str:
        return (f"I am thinking of an object. Ask me yes/no questions to find out what it is, and guess it when you "
                f"know. You have {self.max_turns} turns.")

    def respond(self, utterance: str, target: int) -> Reply:
        question = self.oracle.parse(utterance)
        hidden = self.objects[target]
        if question.kind == "guess":
            if question.guess == hidden.name:
                return Reply(f"Yes! It is {hidden.phrase()}.", keep=lambda c: c == target, solved=True, kind="guess")
            return Reply("No.", keep=lambda c: self.names[c] != question.guess, kind="guess")
        if question.kind == "attribute":
            value = question.holds(hidden.attributes)
            return Reply("Yes." if value else "No.",
                         keep=lambda c: question.holds(self.objects[c].attributes) == value)
        return Reply(UNCLEAR, kind="unclear")


class GreedyQuestioner:
    """The greedy questioner: asks the attribute that splits its candidates most evenly (ties: the first
    attribute of the data file), guesses when one candidate is left (or when no attribute splits them).

    It knows the objects and attributes (as the oracle does), never the target: its candidates come from its own
    questions and the replies. Call it with each user message; it returns the next utterance.
    """

    def __init__(self, objects: Sequence[TQObject], attributes: Sequence[str]):
        self.objects = list(objects)
        self.attributes = list(attributes)
        self.reset()

    def reset(self) -> None:
        """Start a new episode: every object is a candidate."""
        self.candidates = list(self.objects)
        self.asked: tuple[str, str] | None = None

    def best_attribute(self) -> str | None:
        """The attribute whose yes/no split of the candidates is most even; ``None`` when none splits them."""
        best, best_size = None, 0
        for name in self.attributes:
            yes = sum(o.attributes[name] for o in self.candidates)
            smaller = min(yes, len(self.candidates) - yes)
            if smaller > best_size:
                best, best_size = name, smaller
        return best

    def __call__(self, message: str) -> str:
        if self.asked is not None:
            kind, name = self.asked
            said_yes = message.strip().lower().startswith("yes")
            if kind == "attribute":
                self.candidates = [o for o in self.candidates if o.attributes[name] == said_yes]
            elif not said_yes:
                self.candidates = [o for o in self.candidates if o.name != name]
        attribute = self.best_attribute() if len(self.candidates) > 1 else None
        if attribute is None:
            guess = self.candidates[0]
            self.asked = ("guess", guess.name)
            return f"Is it {guess.phrase()}?"
        self.asked = ("attribute", attribute)
        return QUESTIONS[attribute]


def optimal_questioner(env: TwentyQuestions) -> GreedyQuestioner:
    """The greedy questioner over ``env``'s objects (see :class:`GreedyQuestioner`)."""
    return env.expert_policy()


def greedy_questions(env: TwentyQuestions, target: str) -> tuple[int, bool]:
    """Play one episode of the greedy questioner against ``target``: (attribute questions asked before the final
    guess, success)."""
    questioner = optimal_questioner(env)
    message, _ = env.reset(options={"target": target})
    questions, terminated, truncated = 0, False, False
    info: dict[str, Any] = {}
    while not (terminated or truncated):
        message, _, terminated, truncated, info = env.step(questioner(message))
        questions += info["kind"] == "question"
    return questions, bool(info["success"])


def greedy_mean_questions(env: TwentyQuestions) -> float:
    """The greedy questioner's mean number of questions before its final guess, over every target of ``env``
    (exact: each target is played once; every episode must succeed)."""
    counts = []
    for name in env.target_names:
        questions, success = greedy_questions(env, name)
        if not success:
            raise RuntimeError(f"the greedy questioner did not find {name!r} within {env.max_turns} turns")
        counts.append(questions)
    return sum(counts) / len(counts)
