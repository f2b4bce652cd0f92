from tokenmill import ids


def test_prompt_id_ignores_trailing_whitespace_and_newline_style():
    assert ids.prompt_id("s", "a\r\nb  \n") == ids.prompt_id("s", "a\nb")
    assert ids.prompt_id("s", "a") != ids.prompt_id("t", "a")


def test_rollout_id_depends_on_every_part():
    base = ids.rollout_id("p", "m", {"temperature": 1.0}, 0, 0)
    assert base == ids.rollout_id("p", "m", {"temperature": 1.0}, 0, 0)
    variants = [
        ids.rollout_id("q", "m", {"temperature": 1.0}, 0, 0),
        ids.rollout_id("p", "n", {"temperature": 1.0}, 0, 0),
        ids.rollout_id("p", "m", {"temperature": 0.5}, 0, 0),
        ids.rollout_id("p", "m", {"temperature": 1.0}, 1, 0),
        ids.rollout_id("p", "m", {"temperature": 1.0}, 0, 1),
    ]
    assert base not in variants and len(set(variants)) == len(variants)


def test_parts_are_length_prefixed():
    assert ids.content_id("ab", "c") != ids.content_id("a", "bc")
