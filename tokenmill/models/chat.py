"""Prompt rendering: a prompt's text → the token ids a model is given (chat templates).

An instruct checkpoint answers junk when given raw text: it expects its chat template.
`PromptFormat` says how prompts are rendered for every model of a run:

- `chat_template="auto"` (default): a model whose tokenizer has a chat template gets
  `[system?, user: text]` through `apply_chat_template(add_generation_prompt=True)`; the
  rendered string is encoded without adding special tokens again (the template writes
  them), so the ids equal `apply_chat_template(tokenize=True)`'s. A model without a
  template (the bundled tiny ones) gets the raw text, as before.
- `chat_template="none"`: raw text for every model.
- `system_prompt`: the system message (None: the template's own default, if it has one).
  A model without a template gets it as text before the prompt, then a blank line.

A built-in world states its answer format in the prompt implicitly (the tiny models were
trained on it); a chat model needs it said, so when a template is applied the world's
`chat_instruction` (e.g. arithmetic: end with `Answer: <n>`) follows the prompt text in
the user message.

Rendering happens once, in the generate stage, with the engine's tokenizer, and the ids
are what both engines receive, what `rollouts.prompt_token_ids` stores and what every
later stage scores. `identity()` is what a rollout's id records of the rendering (None
when the prompt went in as raw text, so runs without a template keep their ids).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

CHAT_TEMPLATE_MODES = ("auto", "none")


@dataclass(frozen=True)
class PromptFormat:
    chat_template: str = "auto"  # auto | none
    system_prompt: str | None = None

    def __post_init__(self):
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            from tokenmill.errors import TokenmillError

            raise TokenmillError(f"unknown chat template mode {self.chat_template!r}",
                                 fix=f"use one of: {', '.join(CHAT_TEMPLATE_MODES)}")

    def uses_template(self, tokenizer) -> bool:
        return self.chat_template == "auto" and bool(getattr(tokenizer, "chat_template", None))

    def identity(self, tokenizer) -> dict | None:
        """What the rollout id records of how prompts were rendered for this tokenizer."""
        if self.uses_template(tokenizer):
            template = tokenizer.chat_template
            digest = hashlib.blake2b(template.encode(), digest_size=8).hexdigest()
            return {"chat_template": digest, "system_prompt": self.system_prompt}
        if self.system_prompt is not None:
            return {"chat_template": "none", "system_prompt": self.system_prompt}
        return None

    def render_text(self, tokenizer, text: str, instruction: str | None = None) -> str | None:
        """The rendered prompt string, or None when the raw text goes in unchanged."""
        if self.uses_template(tokenizer):
            user = f"{text.rstrip()}\n\n{instruction}" if instruction else text
            messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else [])
            messages.append({"role": "user", "content": user})
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        if self.system_prompt is not None:
            return f"{self.system_prompt}\n\n{text}"
        return None

    def render(self, tokenizer, texts: Sequence[str], instructions: Sequence[str | None] | None = None) -> list[list[int]]:
        """Token ids of each prompt as the model is given it."""
        instructions = list(instructions) if instructions is not None else [None] * len(texts)
        rendered = [self.render_text(tokenizer, t, i) for t, i in zip(texts, instructions)]
        if not texts:
            return []
        if all(r is None for r in rendered):  # raw text: the tokenizer's own special tokens (BOS)
            return tokenizer(list(texts))["input_ids"]
        templated = self.uses_template(tokenizer)
        strings = [r if r is not None else t for r, t in zip(rendered, texts)]
        # a template writes its own special tokens; plain text keeps the tokenizer's (BOS)
        return tokenizer(strings, add_special_tokens=not templated)["input_ids"]


RAW = PromptFormat(chat_template="none")
