"""The countries world: a real knowledge base, a split by country, claims with exact
offsets, a judge worked out by hand, and a verifier that rewards the share of supported
claims."""

from __future__ import annotations

import pytest

from tokenmill.errors import SourceError
from tokenmill.sources.base import Prompt
from tokenmill.sources.worlds import WORLDS, get_world
from tokenmill.sources.worlds.base import split_of
from tokenmill.sources.worlds.countries import ATTRIBUTES, CountriesWorld, claims, load_kb, norm


@pytest.fixture(scope="module")
def world() -> CountriesWorld:
    return CountriesWorld()


def _prompt(world: CountriesWorld, name: str) -> Prompt:
    inst = world._make(world.by_name[name])
    return Prompt(source="countries", prompt=inst.prompt, world="countries", reference=inst.reference, meta=inst.meta)


def _claims(text: str) -> list[tuple[str, str]]:
    out = claims(text)
    for a, b, value, _ in out:
        assert text[a:b] == value  # offsets index the original text exactly
    return [(value, attr) for _, _, value, attr in out]


# ------------------------------------------------------------------ knowledge base


def test_the_kb_holds_real_facts(world):
    assert "countries" in WORLDS and get_world("countries").name == "countries"
    kb = load_kb()
    assert 200 < len(kb) < 260 and [c["name"] for c in kb] == sorted(c["name"] for c in kb)
    assert all(c["capital"] and c["currencies"] and c["languages"] for c in kb)  # no stub records
    assert len({c["name"] for c in kb}) == len(kb)  # the data's Curaçao duplicate is gone
    fr = world.by_name["France"]
    assert fr["capital"] == "Paris" and fr["region"] == "Europe" and fr["subregion"] == "Western Europe"
    assert [c["name"] for c in fr["currencies"]] == ["Euro"] and [c["name"] for c in fr["languages"]] == ["French"]
    assert {"Spain", "Germany", "Belgium"} <= {n["name"] for n in fr["neighbours"]}
    assert world.by_name["Iceland"]["neighbours"] == []  # an island: no land borders
    assert world.by_name["Colombia"]["capital"] == "Bogotá"


def test_every_gold_profile_is_correct(world):
    for country in world.kb:
        prompt = _prompt(world, country["name"])
        v = world.verify(prompt, prompt.reference)
        assert (v.verdict, v.reward, v.detail["missing"]) == ("correct", 1.0, []), country["name"]


# ------------------------------------------------------------------ prompts and splits


def test_one_prompt_per_country_split_by_country_and_deterministic(world):
    test = world.prompts(10, seed=1, split="test")
    assert [p.prompt for p in test] == [p.prompt for p in world.prompts(10, seed=1, split="test")]
    assert [p.prompt for p in test] != [p.prompt for p in world.prompts(10, seed=2, split="test")]
    assert all(p.split == "test" == split_of(p.meta["country"]["name"], 0.3) for p in test)
    assert test[0].prompt == (f"Give a short profile of {test[0].meta['country']['name']}: its capital, currency, "
                              "official languages, region and neighbouring countries.\n")
    n_test = sum(split_of(c["name"], 0.3) == "test" for c in world.kb)
    all_test = world.prompts(n_test, split="test")  # every test country, without tripping an attempt limit
    assert len({p.prompt for p in all_test}) == n_test
    train = {p.meta["country"]["name"] for p in world.prompts(len(world.kb) - n_test, split="train")}
    assert not train & {p.meta["country"]["name"] for p in all_test}
    assert len(world.prompts(len(world.kb), split="all")) == len(world.kb)
    with pytest.raises(SourceError, match=f"{n_test + 1} asked"):
        world.prompts(n_test + 1, split="test")


def test_the_solution_follows_the_chat_instruction(world):
    ref = _prompt(world, "France").reference
    assert ref.splitlines() == ["Capital: Paris", "Currency: Euro", "Languages: French", "Region: Western Europe",
                                "Neighbours: Andorra, Belgium, Germany, Italy, Luxembourg, Monaco, Spain, Switzerland"]
    assert _prompt(world, "Iceland").reference.endswith("Neighbours: none")
    assert "Capital:" in world.chat_instruction and "Neighbours:" in world.chat_instruction


# ------------------------------------------------------------------ claims


def test_claims_of_the_line_format_split_lists_into_items():
    text = ("**Capital:** Paris\n**Currency**: Euro (EUR)\n- Languages: French, Breton & Occitan\n"
            "Region: Europe; Western Europe\nNeighbours: Spain, Bosnia and Herzegovina and the Netherlands.")
    assert _claims(text) == [("Paris", "capital"), ("Euro (EUR)", "currency"), ("French", "language"),
                             ("Breton", "language"), ("Occitan", "language"), ("Europe", "region"),
                             ("Western Europe", "region"), ("Spain", "neighbour"), ("Bosnia and Herzegovina", "neighbour"),
                             ("Netherlands", "neighbour")]
    # two countries are two items even though "Serbia and Montenegro" was once one
    assert _claims("Neighbours: Croatia, Serbia and Montenegro") == [
        ("Croatia", "neighbour"), ("Serbia", "neighbour"), ("Montenegro", "neighbour")]


def test_labels_pronouns_and_placeholders_are_not_claims():
    # what SmolLM2 wrote where values belong: the next label, the instruction's placeholder, a pronoun
    text = "Capital: Currency: Euro\nRegion: <comma-separated>\nThe capital is It.\nLanguages: French"
    assert [(c[2], c[3]) for c in claims(text)] == [("French", "language")]


def test_claims_in_free_prose():
    text = ("France is a country located in Western Europe. The capital of France is Paris. Its currency is the Euro, "
            "and its official languages are French and Breton. France borders Spain, Italy and Germany.")
    assert _claims(text) == [("Western Europe", "region"), ("Paris", "capital"), ("Euro", "currency"),
                             ("French", "language"), ("Breton", "language"), ("Spain", "neighbour"),
                             ("Italy", "neighbour"), ("Germany", "neighbour")]
    text = "Bogotá is the capital of Colombia. The neighbouring countries of Colombia are Peru, Brazil, and Panama."
    assert _claims(text) == [("Bogotá", "capital"), ("Peru", "neighbour"), ("Brazil", "neighbour"), ("Panama", "neighbour")]
    assert _claims("I like trains.") == []


# ------------------------------------------------------------------ judge


@pytest.mark.parametrize("country, attribute, value, label", [
    ("Burkina Faso", "capital", "Kouilou", "not_supported"),  # a Congolese department, not a capital
    ("Burkina Faso", "capital", "Ouagadougou", "supported"),
    ("Spain", "capital", "Madrid", "supported"),
    ("Colombia", "capital", "Bogota", "supported"),  # accents do not matter
    ("Colombia", "capital", "Bogotá", "supported"),
    ("Mexico", "capital", "Mexico City", "supported"),
    ("United States", "capital", "Washington, D.C.", "supported"),
    ("France", "capital", "Lyon", "not_supported"),
    ("France", "capital", "I don't know", "unverifiable"),
    ("France", "capital", "unknown", "unverifiable"),
    ("France", "currency", "Euro", "supported"),
    ("France", "currency", "euros", "supported"),
    ("France", "currency", "EUR", "supported"),
    ("France", "currency", "Euro (EUR)", "supported"),
    ("France", "currency", "US dollar", "not_supported"),
    ("Burkina Faso", "currency", "West African CFA franc", "supported"),  # pycountry: "CFA Franc BCEAO"
    ("United Kingdom", "currency", "British pound", "supported"),
    ("France", "language", "French", "supported"),
    ("France", "language", "Breton", "not_supported"),
    ("Greece", "language", "Greek", "supported"),  # pycountry: "Modern Greek (1453-)"
    ("France", "region", "Western Europe", "supported"),
    ("France", "region", "Europe", "supported"),
    ("France", "region", "West Europe", "supported"),
    ("France", "region", "Asia", "not_supported"),
    ("France", "neighbour", "Spain", "supported"),
    ("France", "neighbour", "the Kingdom of Spain", "supported"),  # an alias
    ("France", "neighbour", "Portugal", "not_supported"),
    ("France", "neighbour", "none", "not_supported"),
    ("France", "neighbour", "the Atlantic Ocean", "unverifiable"),
    ("Iceland", "neighbour", "none", "supported"),
    ("France", "name", "Paris", "supported"),  # a generic span: any KB value of the country
    ("France", "name", "Madrid", "unverifiable"),
])
def test_judge(world, country, attribute, value, label):
    assert world.judge(_prompt(world, country), attribute, value) == label


def test_normalisation():
    assert norm("Bogotá") == norm("bogota") == "bogota"
    assert norm("South-eastern Asia") == norm("Southeast Asia") == "southeast asia"
    assert norm("The Gambia") == "gambia" and norm("Kuwait City") == "kuwait" and norm("N'Djamena") == "ndjamena"


# ------------------------------------------------------------------ verify


def test_verify_rewards_the_share_of_supported_claims(world):
    spain = _prompt(world, "Spain")
    v = world.verify(spain, "Capital: Madrid\nCurrency: Euro\nLanguages: Spanish\nRegion: Southern Europe\n"
                            "Neighbours: France, Portugal, Italy")
    assert (v.verdict, v.reward) == ("incorrect", pytest.approx(6 / 7))  # Italy is not a neighbour
    assert ["neighbour", "Italy", "not_supported"] in v.detail["claims"] and v.detail["missing"] == []
    # fewer claims, all true: full reward, but not correct (attributes missing)
    v = world.verify(spain, "The capital of Spain is Madrid.")
    assert (v.verdict, v.reward, v.detail["missing"]) == ("incorrect", 1.0, [a for a in ATTRIBUTES if a != "capital"])
    v = world.verify(spain, "Spain is nice.")
    assert (v.verdict, v.reward, v.detail) == ("invalid", 0.0, {"claims": [], "missing": list(ATTRIBUTES)})
    # only non-answers: no supported or unsupported claim, reward 0
    v = world.verify(spain, "Capital: unknown")
    assert (v.verdict, v.reward, v.detail["claims"]) == ("incorrect", 0.0, [["capital", "unknown", "unverifiable"]])


@pytest.mark.slow
def test_smollm2_claims_are_labelled_against_the_kb_both_ways(smollm2_dir, tmp_path):
    from test_cli import tokenmill

    from tokenmill.storage.lake import Lake

    lake = tmp_path / "lake"
    r = tokenmill("run", "--world", "countries", "--prompts", "6", "-n", "2", "--temperature", "0.7", "--max-tokens", "96",
                  "--model", "smollm2-135m", "--run-id", "c", "--lake", str(lake))
    assert r.returncode == 0, r.stderr[-2000:]
    r = tokenmill("label", "--run", "c", "--labelers", "hallucination", "--lake", str(lake))
    assert r.returncode == 0, r.stderr[-2000:]
    spans = Lake(lake).read("hallucination_spans", columns=["rollout_id", "entity_type", "label", "text", "extractor",
                                                             "start_pos", "end_pos", "min_prob"]).to_pylist()
    kb = [s for s in spans if s["extractor"] == "kb"]
    assert {s["label"] for s in kb} >= {"supported", "not_supported"}  # the real model gets some right, invents others
    assert {s["entity_type"] for s in kb} <= set(ATTRIBUTES)
    assert all(s["end_pos"] >= s["start_pos"] and s["min_prob"] is not None for s in kb)
    rollouts = Lake(lake).read("rollouts", columns=["verifier", "reward"]).to_pylist()
    assert {x["verifier"] for x in rollouts} == {"world:countries"} and all(0 <= x["reward"] <= 1 for x in rollouts)
