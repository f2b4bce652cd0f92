"""Prompt rendering: chat templates where a model has one, raw text where it has not."""

import pytest
from transformers import AutoTokenizer

from tokenmill.errors import TokenmillError
from tokenmill.models.chat import RAW, PromptFormat
from tokenmill.sources.worlds import get_world
from tokenmill.tasks.prompts import render_prompts


@pytest.fixture(scope="module")
def smol_tok(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def tiny_tok():
    from tokenmill.engines import load_tokenizer

    return load_tokenizer("tiny-small")


def test_auto_renders_the_models_template_with_the_ids_apply_chat_template_gives(smol_tok):
    text = "Compute step by step: start with 7, add 5.\n"
    ids = PromptFormat().render(smol_tok, [text])[0]
    messages = [{"role": "user", "content": text}]
    assert ids == list(smol_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"])
    assert ids[0] == smol_tok.convert_tokens_to_ids("<|im_start|>")
    assert smol_tok.decode(ids).endswith("<|im_start|>assistant\n")
    assert "You are a helpful AI assistant named SmolLM" in smol_tok.decode(ids)  # the template's default system


def test_a_system_prompt_replaces_the_templates_default(smol_tok):
    ids = PromptFormat(system_prompt="Answer tersely.").render(smol_tok, ["Hi"])[0]
    text = smol_tok.decode(ids)
    assert text.startswith("<|im_start|>system\nAnswer tersely.<|im_end|>\n<|im_start|>user\nHi<|im_end|>")
    assert "SmolLM" not in text


def test_none_and_template_less_models_get_the_raw_text(smol_tok, tiny_tok):
    text = "Who is Mira Tolven?\n"
    assert RAW.render(smol_tok, [text]) == smol_tok([text])["input_ids"]
    assert PromptFormat().render(tiny_tok, [text]) == tiny_tok([text])["input_ids"]  # no template: as before
    assert PromptFormat().identity(tiny_tok) is None and RAW.identity(smol_tok) is None


def test_a_system_prompt_for_a_template_less_model_goes_before_the_text(tiny_tok):
    fmt = PromptFormat(system_prompt="Be exact.")
    assert fmt.render(tiny_tok, ["Q"]) == tiny_tok(["Be exact.\n\nQ"])["input_ids"]
    assert fmt.identity(tiny_tok) == {"chat_template": "none", "system_prompt": "Be exact."}


def test_the_identity_names_the_template_and_the_system_prompt(smol_tok):
    a, b = PromptFormat().identity(smol_tok), PromptFormat(system_prompt="x").identity(smol_tok)
    assert a["chat_template"] == b["chat_template"] and len(a["chat_template"]) == 16
    assert a != b and a["system_prompt"] is None


def test_a_world_says_its_answer_format_to_a_chat_model_only(smol_tok, tiny_tok):
    prompts = get_world("arithmetic").prompts(2)
    chat = smol_tok.decode(render_prompts(smol_tok, prompts, PromptFormat())[0])
    assert prompts[0].prompt.strip() in chat and "`Answer: <number>`" in chat
    raw = render_prompts(tiny_tok, prompts, PromptFormat())
    assert raw == tiny_tok([p.prompt for p in prompts])["input_ids"]  # the tiny models' trained format


def test_an_unknown_mode_is_refused():
    with pytest.raises(TokenmillError, match="unknown chat template mode 'chatml'"):
        PromptFormat(chat_template="chatml")
