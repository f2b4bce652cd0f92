"""Bios world: biographies of fictional people from a generated knowledge base.

Knowledge base (fixed by `kb_seed`, so the bundled models and every run share it):
each person has a unique name, birth year, city, occupation and employer.

Prompt:    "Write a short biography of Mira Tolven.\n"
Solution:  "Mira Tolven was born in 1962 in Vassport. Mira works as a baker at Quill & Oak."

Verifier: each of the four attributes is read from the text by its sentence pattern
and checked against the knowledge base: `supported` (equal), `not_supported`
(stated, different) or `missing`. reward = supported / 4; `correct` iff all four
are supported. `split` is by person: test people never appear in training text, so
a model can only make their facts up.

Claims and judge (the hallucination labeler's ground truth, `labelers/hallucination/annotators.py`):
`claims(text)` = every match of the four sentence patterns, `(char_start, char_end,
value, attribute)`; `judge(prompt, attribute, value)`: a KB attribute is supported iff
equal to the person's value, else not_supported; any other span (a generic entity type)
is supported when it equals one of the person's values (the name among them), else
unverifiable.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass
from functools import cached_property

from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds.base import Instance, Verdict, World, split_of

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr", "kl"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei"]
_CODAS = ["", "", "n", "r", "l", "s", "th", "m"]
CITIES = ["Vassport", "Ellowmere", "Kestrin", "Dunhallow", "Marrowick", "Sablecourt", "Tiverra",
          "Quenby", "Orlisford", "Brackwater", "Halvergate", "Pennick"]
OCCUPATIONS = ["baker", "carpenter", "chemist", "librarian", "pilot", "surgeon", "tailor",
               "geologist", "violinist", "architect", "journalist", "beekeeper"]
EMPLOYERS = ["Quill & Oak", "Norwind Labs", "Castellan Works", "Bluefen Press", "Arden Mills",
             "Halcyon Air", "Stonebridge Clinic", "Marlow Textiles", "Oxenford Survey", "Lumen Hall"]
ATTRIBUTES = ("birth_year", "city", "occupation", "employer")
_TEMPLATES = ["Write a short biography of {name}.\n", "Tell me about {name}.\n", "Who is {name}?\n"]
_PATTERNS = {
    "birth_year": re.compile(r"born in (\d{3,4})"),
    "city": re.compile(r"born in \d{3,4} in ([A-Z][\w' -]*?)[.,\n]"),
    "occupation": re.compile(r"works as an? ([a-z ]+?) at"),
    "employer": re.compile(r" at ([A-Z][\w&' -]*?)[.\n]"),
}


@dataclass(frozen=True)
class Person:
    name: str
    birth_year: int
    city: str
    occupation: str
    employer: str

    @property
    def first(self) -> str:
        return self.name.split()[0]

    def biography(self) -> str:
        article = "an" if self.occupation[0] in "aeiou" else "a"
        return (f"{self.name} was born in {self.birth_year} in {self.city}. "
                f"{self.first} works as {article} {self.occupation} at {self.employer}.")


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)).capitalize() + rng.choice(_CODAS)


def build_kb(n_people: int, seed: int) -> list[Person]:
    rng = random.Random(f"bios-kb:{seed}")
    people: dict[str, Person] = {}
    while len(people) < n_people:
        name = f"{_word(rng, rng.randint(1, 2))} {_word(rng, 2)}"
        people.setdefault(name, Person(name, rng.randint(1900, 1999), rng.choice(CITIES),
                                       rng.choice(OCCUPATIONS), rng.choice(EMPLOYERS)))
    return list(people.values())


def extract_facts(text: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for attr, pat in _PATTERNS.items():
        m = pat.search(text)
        out[attr] = m.group(1).strip() if m else None
    return out


class BiosWorld(World):
    name = "bios"
    test_fraction = 0.2
    # the verifier reads these two sentence patterns (_PATTERNS)
    chat_instruction = ("Answer in exactly two sentences of this form: \"<full name> was born in <year> in <city>. "
                        "<first name> works as a <occupation> at <employer>.\"")

    def __init__(self, n_people: int = 600, kb_seed: int = 0):
        self.n_people, self.kb_seed = n_people, kb_seed

    @cached_property
    def kb(self) -> list[Person]:
        return build_kb(self.n_people, self.kb_seed)

    @cached_property
    def by_name(self) -> dict[str, Person]:
        return {p.name: p for p in self.kb}

    def _instance(self, rng: random.Random) -> Instance:
        person = rng.choice(self.kb)
        prompt = rng.choice(_TEMPLATES).format(name=person.name)
        bio = person.biography()
        return Instance(prompt, bio, bio, {"person": asdict(person)}, key=person.name)

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        truth = prompt.meta["person"]
        stated = extract_facts(completion)
        status = {
            a: "missing" if stated[a] is None else "supported" if stated[a] == str(truth[a]) else "not_supported"
            for a in ATTRIBUTES
        }
        supported = sum(s == "supported" for s in status.values())
        verdict = "correct" if supported == len(ATTRIBUTES) else "incorrect"
        return Verdict(supported / len(ATTRIBUTES), verdict, {"stated": stated, "status": status})

    def claims(self, text: str) -> list[tuple[int, int, str, str]]:
        """[(char_start, char_end, value, attribute)] of every pattern match, sorted."""
        found = [(*m.span(1), m.group(1), attr) for attr, pat in _PATTERNS.items() for m in pat.finditer(text)]
        return sorted(found)

    def judge(self, prompt: Prompt, attribute: str, value: str) -> str:
        person = prompt.meta["person"]
        if attribute in ATTRIBUTES:
            return "supported" if value == str(person[attribute]) else "not_supported"
        return "supported" if value in {str(v) for v in person.values()} else "unverifiable"

    def split_of_person(self, name: str) -> str:
        return split_of(name, self.test_fraction)
