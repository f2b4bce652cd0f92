"""Countries world: short profiles of real countries, checked against a knowledge base.

Knowledge base: the `countryinfo` package's one JSON per country (capital, ISO 4217
currency codes, ISO 639-1 language codes, region, subregion, alpha-3 borders), names
resolved with `pycountry`. Skipped: records without a capital and stub records without
currency or language data (uninhabited or dependent territories); funds codes (BOV,
CHE, …: not money people pay with) are dropped; the data's Curaçao duplicate is one
record. Data fixes are the few tables below (`_OLD_CURRENCIES`, `_LANGUAGE_FIXES`, …).

Prompt:    "Give a short profile of France: its capital, currency, official languages,
            region and neighbouring countries.\\n"   (one prompt per country)
Solution:  "Capital: Paris\\nCurrency: Euro\\nLanguages: French\\nRegion: Western Europe\\n"
           "Neighbours: Andorra, Belgium, Germany, …"   ("none" for a country without land borders)

Claims (`claims(text)`): every stated value with its exact character span, from the
line format above (also "**Capital:** Paris", "- Capital: Paris") and from prose ("The
capital of France is Paris", "Its currency is the euro", "official languages are French
and Breton", "located in Western Europe", "borders Spain, Italy and Germany"). Lists
(currency, language, neighbour; region on , ; /) give one claim per item; "and" inside a
known name ("Bosnia and Herzegovina") does not split it. What stands where a value belongs
without being one — the next field's label ("Capital: Currency: …"), a pronoun ("It"), the
instruction's placeholder ("<comma-separated>") — is no claim.

Judge (`judge(prompt, attribute, value)`), after normalising both sides (NFKD accents
stripped, case, punctuation, "the", a trailing "city", "-ern" compass words: "Western
Europe" = "West Europe"): supported when the value is one of the country's values or
their aliases; a non-answer ("unknown", "I don't know") is unverifiable; "none" is
supported only as the neighbours of a country without land borders; a sea or ocean named
as a neighbour is unverifiable; anything else is not_supported. Any other attribute (a
generic entity type: name, number, …) is supported when it equals any KB value of the
country, else unverifiable.

Verifier: reward = supported / (supported + not_supported), the share of supported
claims (0.0 without any): a model that claims less is not penalised for omissions by the
reward — the verdict is: `correct` iff each of the five attributes has a claim and every
claim is supported; `invalid` when no claim is found; else `incorrect`. `split` is by
country (test_fraction 0.3).
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from functools import cached_property, lru_cache
from pathlib import Path

from tokenmill.charclass import UPPER
from tokenmill.errors import SourceError
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds.base import Instance, Verdict, World, split_of

ATTRIBUTES = ("capital", "currency", "language", "region", "neighbour")
SUPPORTED, NOT_SUPPORTED, UNVERIFIABLE = "supported", "not_supported", "unverifiable"
_TEMPLATE = "Give a short profile of {name}: its capital, currency, official languages, region and neighbouring countries.\n"

# codes pycountry no longer lists (the data predates the change) → their names
_OLD_CURRENCIES = {"BGN": "Bulgarian Lev", "BYR": "Belarusian Ruble", "CSD": "Serbian Dinar",
                   "CUC": "Cuban Convertible Peso", "HRK": "Kuna", "MRO": "Ouguiya", "SLL": "Leone",
                   "STD": "Dobra", "VEF": "Bolívar", "ZMK": "Zambian Kwacha"}
_FUNDS = {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "USS", "UYI"}  # ISO 4217 funds codes
_LANGUAGE_FIXES = {"rs": "sr"}  # Serbia's record says "rs" (a country code) for Serbian
# common English names pycountry lacks (its names are the ISO reference names)
_LANGUAGE_ALIASES = {"zh": ["Mandarin", "Mandarin Chinese"], "el": ["Greek"], "fa": ["Farsi"], "ht": ["Haitian Creole"],
                     "pa": ["Punjabi"], "ps": ["Pashto"], "ky": ["Kyrgyz"], "ny": ["Chewa"], "dv": ["Dhivehi", "Maldivian"],
                     "kl": ["Greenlandic"], "to": ["Tongan"], "rn": ["Kirundi"], "st": ["Sesotho"], "tn": ["Setswana"],
                     "ss": ["Swazi"], "sw": ["Kiswahili"], "nb": ["Norwegian"], "nn": ["Norwegian"], "ff": ["Fula", "Fulani"]}
_EXTRA_COUNTRIES = {"KOS": "Kosovo", "XKX": "Kosovo"}  # border codes without a record
_REGION_ALIASES = {"Western Asia": ["Middle East"], "Latin America and the Caribbean": ["Latin America"],
                   "Australia and New Zealand": ["Australasia"]}
# extra words a currency may carry besides its own name, country and demonym ("West African CFA franc")
_CURRENCY_QUALIFIERS = {"west", "east", "central", "north", "south", "african", "caribbean", "new", "cfa", "us"}
_FEATURES = {"ocean", "sea", "gulf", "bay", "strait", "channel", "lake", "river", "mountain", "mountains", "coast"}
_NON_ANSWERS = ("unknown", "i dont know", "i do not know", "not known", "not sure", "unsure", "no idea", "n a",
                "unclear", "no information", "no data", "not available")
_LIST_ATTRS = {"currency", "language", "neighbour"}

# ------------------------------------------------------------------ normalising

_FOLD = str.maketrans({"ø": "o", "æ": "ae", "œ": "oe", "ß": "ss", "đ": "d", "ł": "l", "ı": "i", "þ": "th", "ð": "d"})


def norm(s: str) -> str:
    """Comparable form: accents stripped (NFKD), lower case, punctuation and "the" gone,
    "and" for "&", compass "-ern" dropped, a trailing "city" dropped."""
    s = unicodedata.normalize("NFKD", s.lower().translate(_FOLD))
    s = "".join(c for c in s if not unicodedata.combining(c)).replace("&", " and ")
    s = re.sub(r"[’'`ʻ]", "", s)  # N'Djamena = Ndjamena
    s = re.sub(r"[^\w\s]|_", " ", s)
    s = re.sub(r"\b(north|south) (east|west)", r"\1\2", s)
    s = re.sub(r"\b(north|south|east|west|northeast|northwest|southeast|southwest)ern\b", r"\1", s)
    words = [w for w in s.split() if w != "the"]
    if len(words) > 1 and words[-1] == "city":  # "Mexico City" = "Mexico", "Kuwait City" = "Kuwait"
        words = words[:-1]
    return " ".join(words)


def _singular(words: list[str]) -> list[str]:
    return [w[:-1] if len(w) > 3 and w.endswith("s") else w for w in words]  # euros, dollars, rupees


def _is_non_answer(n: str) -> bool:
    return n == "" or n.startswith(_NON_ANSWERS)


def _is_none(n: str) -> bool:
    return n.startswith("none") or (n.startswith("no ") and ("border" in n or "neighb" in n))


# ------------------------------------------------------------------ knowledge base


def _display(name: str) -> str:
    """A name without commas or parentheses: "Virgin Islands, British" → "British Virgin Islands"."""
    name = re.sub(r"\s*\([^)]*\)", "", name).strip()
    if ", " in name:
        head, tail = name.split(", ", 1)
        name = f"{tail} {head}"
    return name


def _language(code: str) -> dict | None:
    import pycountry

    code = _LANGUAGE_FIXES.get(code, code)
    lang = pycountry.languages.get(alpha_2=code) or pycountry.languages.get(alpha_3=code)
    if lang is None:
        return None
    raw = [lang.name, getattr(lang, "common_name", None), *_LANGUAGE_ALIASES.get(code, [])]
    names = [re.sub(r"\s*\([^)]*\)", "", n).strip() for n in raw if n]
    names += [n[len("Modern "):] for n in names if n.startswith("Modern ")]
    return {"code": code, "name": names[0], "aliases": sorted(set(names[1:]) - {names[0]})}


def _currency(code: str) -> dict | None:
    import pycountry

    cur = pycountry.currencies.get(alpha_3=code)
    name = cur.name if cur else _OLD_CURRENCIES.get(code)
    return {"code": code, "name": name} if name else None


@lru_cache(maxsize=1)
def load_kb() -> tuple[dict, ...]:
    """The countries, sorted by name, as plain-JSON records (see the module docstring)."""
    import countryinfo
    import pycountry

    raw: dict[str, dict] = {}
    for path in sorted((Path(countryinfo.__file__).parent / "data").glob("*.json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        raw.setdefault(rec["name"], rec)  # the data holds Curaçao twice
    by_code: dict[str, dict] = {}
    for rec in raw.values():
        iso = rec.get("ISO") or {}
        for c in (iso.get("alpha3"), iso.get("alpha2")):  # Vatican's record gives "IT" for Italy
            if c:
                by_code.setdefault(c, rec)

    def aliases(rec: dict) -> list[str]:
        out = {rec["name"], _display(rec["name"]), *(a for a in rec.get("altSpellings") or [] if len(a) > 1)}
        pc = pycountry.countries.get(alpha_3=(rec.get("ISO") or {}).get("alpha3", ""))
        if pc:
            out |= {n for n in (pc.name, getattr(pc, "common_name", None), getattr(pc, "official_name", None)) if n}
        return sorted(out - {_display(rec["name"])})

    def country_name(code: str) -> dict | None:
        if code in _EXTRA_COUNTRIES:
            return {"code": code, "name": _EXTRA_COUNTRIES[code], "aliases": []}
        rec = by_code.get(code)
        return {"code": rec["ISO"]["alpha3"], "name": _display(rec["name"]), "aliases": aliases(rec)} if rec else None

    kb = []
    for rec in raw.values():
        capital = rec.get("capital")
        capital = capital[0] if isinstance(capital, list) and capital else capital
        currencies = [c for c in map(_currency, [c for c in rec.get("currencies") or [] if c not in _FUNDS]) if c]
        languages = [lang for lang in map(_language, rec.get("languages") or []) if lang]
        if not capital or not currencies or not languages or rec.get("borders") is None:
            continue
        neighbours = sorted((n for n in map(country_name, rec["borders"]) if n), key=lambda n: n["name"])
        kb.append({
            "name": _display(rec["name"]), "aliases": aliases(rec), "alpha3": rec["ISO"]["alpha3"],
            "capital": capital, "currencies": currencies, "languages": languages,
            "region": rec.get("region") or "", "subregion": rec.get("subregion") or "",
            "intermediate_region": rec.get("intermediateregion") or "", "demonym": rec.get("demonym") or "",
            "neighbours": neighbours,
        })
    return tuple(sorted(kb, key=lambda r: r["name"]))


@lru_cache(maxsize=1)
def _protected() -> tuple[frozenset[str], frozenset[str]]:
    """(normalised KB names containing "and", normalised country names): a list is not
    split inside the first ones, unless both halves are countries ("Serbia and Montenegro")."""
    names, countries = set(), set()
    for c in load_kb():
        countries |= {c["name"], *c["aliases"]}
        names |= {c["name"], *c["aliases"], c["subregion"], *(cur["name"] for cur in c["currencies"])}
    return frozenset(n for n in map(norm, names) if " and " in n), frozenset(map(norm, countries))


def _glued(left: str, right: str) -> bool:
    joined, countries = _protected()
    return norm(f"{left} and {right}") in joined and not (norm(left) in countries and norm(right) in countries)


def profile(country: dict) -> str:
    """The gold completion: five lines in the chat instruction's format."""
    neighbours = ", ".join(n["name"] for n in country["neighbours"]) or "none"
    return (f"Capital: {country['capital']}\n"
            f"Currency: {', '.join(c['name'] for c in country['currencies'])}\n"
            f"Languages: {', '.join(lang['name'] for lang in country['languages'])}\n"
            f"Region: {country['subregion'] or country['region']}\n"
            f"Neighbours: {neighbours}")


# ------------------------------------------------------------------ claims

_LET = r"(?:[^\W\d_]|[\u0300-\u036f])"
# a capitalised word: "D.C.", "Paris", "N'Djamena", "Port-aux-Français"
_WORD = rf"(?:(?:{UPPER}\.){{2,}}|{UPPER}(?:(?:{_LET}|['’\-])*{_LET})?)"
_NP = rf"{_WORD}(?:[ \u00a0](?:(?:de|da|do|del|la|el|of|aux|es|al|di|du|le|les)[ \u00a0])?{_WORD})*"
_RNP = rf"{_WORD}(?:[ \u00a0](?:(?:and the|and|of the|of)[ \u00a0])?{_WORD})*"  # "Latin America and the Caribbean"
_NP_LIST = rf"{_NP}(?:(?:\s*[,;/]\s*|\s*&\s*|,?\s+and\s+)(?:the\s+)?{_NP})*"
_STOP = r"(?=\s*(?:[.;\n]|$)|,?\s+(?:and\s+|but\s+)?(?:its|it|the|which|while|with|where|is|are|has)\s)"
_VALUE = rf"[^.;\n]+?{_STOP}"  # lower-case values ("the euro"): up to the end of the clause
_LABELS = [(r"capital(?: city)?", "capital"), (r"currenc(?:y|ies)", "currency"),
           (r"(?:official )?languages?(?: spoken)?|official language\(s\)", "language"),
           (r"region|sub-?region|location|continent", "region"),
           (r"neighbou?rs|neighbou?ring (?:countries|nations|states)|borders|bordering countries|land borders", "neighbour")]
_LINE = re.compile(
    r"^[ \t]*(?:[-*•][ \t]+|\d+[.)][ \t]+)?(?:\*\*|__)?(?P<label>(?i:"
    + "|".join(f"(?P<{attr}>{pat})" for pat, attr in _LABELS)
    + r"))(?:\*\*|__)?[ \t]*:(?:\*\*|__)?[ \t]*(?P<v>[^\n]*?)[ \t]*$", re.M)
_PROSE = [
    ("capital", re.compile(rf"\b(?i:capital)(?: city)?(?:\s+of\s+(?:the\s+)?{_NP})?\s+(?:is|was)\s+"
                           rf"(?:the\s+city\s+of\s+)?(?P<v>{_NP})")),
    ("capital", re.compile(rf"\b(?i:capital)(?: city)?(?:,\s+|\s+(?:at|in)\s+)(?P<v>{_NP})")),
    ("capital", re.compile(rf"(?P<v>{_NP})\s+is\s+(?:the|its)\s+capital\b")),
    ("currency", re.compile(rf"\b(?i:currenc(?:y|ies))(?:\s+used)?(?:\s+(?:of|in)\s+(?:the\s+)?{_NP})?"
                            rf"\s+(?:is|are)\s+(?:the\s+)?(?P<v>{_VALUE})")),
    ("language", re.compile(rf"\b(?i:(?:official\s+)?languages?)(?:\s+spoken)?(?:\s+(?:of|in)\s+(?:the\s+)?{_NP})?"
                            rf"\s+(?:is|are|include|includes)\s+(?:the\s+)?(?P<v>{_NP_LIST})")),
    ("region", re.compile(rf"\b(?i:located|situated|lies|lying|found)\s+in\s+(?:the\s+)?(?P<v>{_RNP})")),
    ("region", re.compile(rf"\b(?:country|nation|state)\s+in\s+(?:the\s+)?(?P<v>{_RNP})")),
    ("region", re.compile(rf"\b(?i:region)\s+(?:is|of)\s+(?:the\s+)?(?P<v>{_RNP})")),
    ("neighbour", re.compile(rf"\b(?:(?i:borders?)(?:\s+with)?|(?i:bordered)\s+by|(?i:bordering)"
                             rf"|(?i:shares)\s+(?:land\s+)?borders?\s+with"
                             rf"|(?i:neighbou?r(?:s|ing\s+countries|ing\s+nations|ing\s+states)))(?:\s+of\s+{_NP})?"
                             rf"(?:\s+(?:are|is|include|includes))?:?\s+(?:the\s+)?(?P<v>{_NP_LIST})")),
]
_SEP = {"currency": re.compile(r"\s*(?:[,;/]|&|\band\b)\s*"), "language": re.compile(r"\s*(?:[,;/]|&|\band\b)\s*"),
        "neighbour": re.compile(r"\s*(?:[,;/]|&|\band\b)\s*"), "region": re.compile(r"\s*[,;/]\s*")}
_TRIM = " \t*_.,;:\"“”"


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """[a, b) without surrounding blanks, markdown and punctuation, nor a lower-case "the "/"and "."""
    while a < b and text[a] in _TRIM:
        a += 1
    while b > a and text[b - 1] in _TRIM:
        b -= 1
    for lead in ("the ", "and "):
        if text.startswith(lead, a) and b - a > len(lead):
            a += len(lead)
    return a, b


def _items(text: str, a: int, b: int, attr: str) -> list[tuple[int, int]]:
    """The value [a, b) split into list items (per `_SEP`), each trimmed; "X and Y" stays
    whole when it is a known name."""
    sep = _SEP.get(attr)
    if sep is None:
        return [_trim(text, a, b)]
    cuts = [(m.start() + a, m.end() + a) for m in sep.finditer(text[a:b]) if m.start() > 0 and m.end() < b - a]
    pieces, start = [], a
    for s, e in cuts:
        pieces.append((start, s, e))  # item [start, s), separator [s, e)
        start = e
    pieces.append((start, b, b))
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(pieces):
        s, e, _ = pieces[i]
        # glue "Bosnia" + " and " + "Herzegovina" back when the whole is one name
        while i + 1 < len(pieces) and "and" in text[e:pieces[i][2]]:
            nxt_start, nxt_end, _ = pieces[i + 1]
            if not _glued(text[s:e], text[nxt_start:nxt_end]):
                break
            i, e = i + 1, nxt_end
        out.append(_trim(text, s, e))
        i += 1
    return [(x, y) for x, y in out if y > x]


def claims(text: str) -> list[tuple[int, int, str, str]]:
    """[(char_start, char_end, value, attribute)] of every value `text` states, sorted."""
    found: set[tuple[int, int, str]] = set()
    lines: list[tuple[int, int, str]] = []
    for m in _LINE.finditer(text):
        attr = next(a for a in ATTRIBUTES if m.group(a) is not None)
        lines.append((m.start(), m.end(), attr))
        found |= {(x, y, attr) for x, y in _items(text, *m.span("v"), attr)}
    for attr, pat in _PROSE:
        for m in pat.finditer(text):
            a, b = m.span("v")
            if any(attr == la and a < lb and b > ls for ls, lb, la in lines):
                continue  # the line format already read this line
            found |= {(x, y, attr) for x, y in _items(text, a, b, attr)}
    return [(a, b, text[a:b], attr) for a, b, attr in sorted(found) if not _not_a_value(text[a:b])]


# what a small model puts where a value belongs without stating one: the next field's label
# ("Capital: Currency: …", so no value holds a colon), a pronoun, the instruction's own
# placeholder ("<comma-separated>")
_NON_VALUES = frozenset({"capital", "currency", "currencies", "language", "languages", "official languages", "region",
                         "neighbour", "neighbours", "neighbor", "neighbors", "neighbouring countries", "it", "its",
                         "this", "that", "they", "there", "which", "republic"})


def _not_a_value(value: str) -> bool:
    return any(c in value for c in "<>:") or value.strip(" .,;*").lower() in _NON_VALUES


# ------------------------------------------------------------------ judging


def _matches(value: str, names) -> bool:
    n = norm(value)
    return bool(n) and any(n == norm(x) for x in names if x)


def _currency_ok(value: str, country: dict) -> bool:
    n = _singular(norm(value).split())
    if not n:
        return False
    context = set(_singular(norm(" ".join([country["name"], *country["aliases"], country["demonym"]])).split()))
    for cur in country["currencies"]:
        words = _singular(norm(cur["name"]).split())
        if n == words or n == [cur["code"].lower()]:
            return True
        # "West African CFA franc", "euros", "United States dollar": the unit plus known qualifiers
        if n[-1] in words and set(n[:-1]) <= set(words) | context | _CURRENCY_QUALIFIERS:
            return True
    return False


def _kb_values(country: dict) -> list[str]:
    out = [country["name"], *country["aliases"], country["capital"], country["region"], country["subregion"],
           country["intermediate_region"], country["demonym"]]
    for c in country["currencies"]:
        out += [c["name"], c["code"]]
    for lang in country["languages"]:
        out += [lang["name"], *lang["aliases"]]
    for nb in country["neighbours"]:
        out += [nb["name"], *nb["aliases"]]
    return out


def _capital_names(capital: str) -> list[str]:
    return [capital, capital.split(",")[0], re.sub(r"\s+D\.?C\.?$", "", capital)]  # "Washington D.C." = "Washington"


def judge_value(country: dict, attribute: str, value: str) -> str:
    """supported | not_supported | unverifiable for one claimed value (module docstring)."""
    candidates = [value, re.sub(r"\s*\([^)]*\)", "", value), *re.findall(r"\(([^)]*)\)", value)]  # "Euro (EUR)"
    if attribute not in ATTRIBUTES:  # a generic entity: supported when it is any value of the country
        return SUPPORTED if any(_matches(v, _kb_values(country)) for v in candidates) else UNVERIFIABLE
    n = norm(value)
    if _is_non_answer(n):
        return UNVERIFIABLE
    if attribute == "neighbour" and _is_none(n):
        return SUPPORTED if not country["neighbours"] else NOT_SUPPORTED
    if attribute == "capital":
        ok = any(_matches(v, _capital_names(country["capital"])) for v in candidates)
    elif attribute == "currency":
        ok = any(_currency_ok(v, country) for v in candidates)
    elif attribute == "language":
        names = [x for lang in country["languages"] for x in (lang["name"], lang["code"], *lang["aliases"])]
        ok = any(_matches(re.sub(r"\s+languages?$", "", v.strip(), flags=re.I), names) for v in candidates)
    elif attribute == "region":
        names = [country["region"], country["subregion"], country["intermediate_region"],
                 *_REGION_ALIASES.get(country["subregion"], [])]
        ok = any(_matches(v, names) for v in candidates)
    else:  # neighbour
        ok = any(_matches(v, [x for nb in country["neighbours"] for x in (nb["name"], *nb["aliases"])]) for v in candidates)
        if not ok and _FEATURES & set(n.split()):
            return UNVERIFIABLE  # "the Atlantic Ocean": true or not, no country
    return SUPPORTED if ok else NOT_SUPPORTED


class CountriesWorld(World):
    name = "countries"
    test_fraction = 0.3
    # the line format `claims` reads first (it also reads prose)
    chat_instruction = ("Answer in exactly five lines of this form: \"Capital: <city>\", \"Currency: <currency>\", "
                        "\"Languages: <official languages, comma-separated>\", \"Region: <region>\", "
                        "\"Neighbours: <neighbouring countries, comma-separated, or none>\".")
    @property
    def kb(self) -> tuple[dict, ...]:
        return load_kb()

    @cached_property
    def by_name(self) -> dict[str, dict]:
        return {c["name"]: c for c in self.kb}

    def _make(self, country: dict) -> Instance:
        gold = profile(country)
        meta = {"country": json.loads(json.dumps(country))}  # a copy: the cached KB stays untouched
        return Instance(_TEMPLATE.format(name=country["name"]), gold, gold, meta, key=country["name"])

    def _instance(self, rng: random.Random) -> Instance:
        return self._make(rng.choice(self.kb))

    def instances(self, n: int, seed: int = 0, split: str = "test") -> list[Instance]:
        """`n` distinct countries of `split`, a seeded shuffle of all of them: with one prompt
        per country, random draws would need many attempts to find the last few."""
        self.check_split(split)
        pool = [c for c in self.kb if split == "all" or split_of(c["name"], self.test_fraction) == split]
        if n > len(pool):
            raise SourceError(f"only {len(pool)} distinct {split} problems found, {n} asked",
                              where=f"world:{self.name}", fix="ask for fewer prompts")
        random.Random(f"{self.name}:{seed}:{split}").shuffle(pool)
        return [self._make(c) for c in pool[:n]]

    def claims(self, text: str) -> list[tuple[int, int, str, str]]:
        return claims(text)

    def judge(self, prompt: Prompt, attribute: str, value: str) -> str:
        return judge_value(prompt.meta["country"], attribute, value)

    def verify(self, prompt: Prompt, completion: str) -> Verdict:
        judged = [(attr, value, self.judge(prompt, attr, value)) for _, _, value, attr in claims(completion)]
        sup = sum(lab == SUPPORTED for *_, lab in judged)
        ns = sum(lab == NOT_SUPPORTED for *_, lab in judged)
        missing = [a for a in ATTRIBUTES if not any(attr == a for attr, *_ in judged)]
        if not judged:
            verdict = "invalid"
        else:
            verdict = "correct" if not missing and sup == len(judged) else "incorrect"
        return Verdict(sup / (sup + ns) if sup + ns else 0.0, verdict,
                       {"claims": [list(c) for c in judged], "missing": missing})
