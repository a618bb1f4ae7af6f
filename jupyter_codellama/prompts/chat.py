"""Chat prompts: Meta's Instruct format for Code Llama, the model's own template otherwise.

Code Llama Instruct (7B/13B/34B) was tuned on Llama 2's format, inputs stripped::

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]

We build those ids ourselves, turn by turn like Meta's ``chat_completion`` (BOS + one encode
per turn + EOS), so that text in a message can never become a control token and a tokenizer
reloaded without its "▁" normaliser still gives the trained ids. Where the tokenizer ships a
chat template it is rendered too and must give the same text; a mismatch is reported.

Other chat models (the embedded SmolLM2, 70B-Instruct) use the tokenizer's template. Base and
Python models have no chat format: they are asked in code, the request as a comment in a new
cell after the notebook (:data:`~jupyter_codellama.prompts.infill.CONTINUATION_STOP` ends it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence, TypedDict

from ..models import ModelSpec
from .encoding import PromptEncoder, prompt_encoder
from .infill import CONTINUATION_STOP
from .notebook_context import ContextReport, NotebookContext, build_context, prompt_redactor
from .prompt import Prompt, PromptTooLongError, prompt_budget

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ChatMessage", "build_chat_prompt"]

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are Code Llama, a coding assistant inside the user's Jupyter notebook, running in the "
    "same Python kernel as their code. You may be shown the notebook's cells, their outputs, the "
    "last error and the live variables (DataFrame columns and dtypes, array shapes, function "
    "signatures): use the names and data that already exist rather than inventing new ones. "
    "When the answer is code, give complete, runnable Python in a single ```python block that "
    "can run as the next cell, then at most a few sentences of explanation."
)
CONTEXT_INTRO = "My notebook so far, as a Python script (markdown and outputs as comments, live variables at the top):"


CONTEXT_ECHO_STOP = ("# In[",)


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


Turn = tuple[str, str]  # (role, stripped content); users at even, assistants at odd positions


@dataclass(frozen=True)
class _Rendered:
    text: str
    ids: list[int]
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...]
    note: str = ""


def _drop_oldest(render, turns: list, limit: int, max_new_tokens: int):
    """(turns, their rendering, exchanges dropped): the oldest exchanges go until the rest fit."""
    rendered = render(turns, None)
    dropped = 0
    while len(rendered.ids) > limit:
        if len(turns) == 1:
            raise PromptTooLongError(
                f"The request is {len(rendered.ids)} tokens; at most {limit} fit with "
                f"{max_new_tokens} tokens kept for the answer. Shorten it or lower max_new_tokens."
            )
        turns, dropped = turns[2:], dropped + 1
        rendered = render(turns, None)
    return turns, rendered, dropped


def _with_context(render, turns: list, context: NotebookContext, limit: int, count_tokens, redact):
    """(rendering, context report) with as much notebook context as fits; None when none does."""
    source = _current_source(context)
    budget = limit - len(render(turns, "").ids)
    while budget > 0:
        allocated = build_context(
            source, "", context, budget=budget, count_tokens=count_tokens, mark_current=True, redact=redact
        )
        with_context = render(turns, allocated.prefix + allocated.suffix)
        if len(with_context.ids) <= limit:
            return with_context, allocated.report
        budget -= len(with_context.ids) - limit
    return None


def build_chat_prompt(
    tokenizer: Any,
    spec: ModelSpec,
    messages: Sequence[ChatMessage],
    system: str | None = None,
    *,
    context: NotebookContext | None = None,
    namespace: Mapping[str, Any] | None = None,
    max_new_tokens: int = 512,
    max_prompt_tokens: int | None = None,
) -> Prompt:
    """The prompt for a conversation that ends with the user's request.

    ``system`` (or a leading system message) replaces :data:`DEFAULT_SYSTEM_PROMPT`; ``""``
    means none. ``context`` puts the notebook (cells, outputs, variables) before the last
    request, within window − ``max_new_tokens`` (capped by ``max_prompt_tokens``). When the
    conversation alone is too long the oldest exchanges are dropped; when the last request
    alone is, :class:`PromptTooLongError` is raised.

    Every message (a cell or traceback pasted into it, a quoted selection) is redacted like the
    context, with the values of ``namespace`` (the kernel's; default: the context's).
    """
    redact = prompt_redactor(context, namespace)
    system_text, turns = _normalize(messages, system)
    system_text, turns = redact(system_text), [(role, redact(text)) for role, text in turns]
    window, limit = prompt_budget(spec, tokenizer, max_new_tokens, max_prompt_tokens)
    encoder = prompt_encoder(tokenizer)
    layout = _layout(spec, tokenizer, encoder)
    render = _renderer(layout, tokenizer, encoder, system_text)
    notes: list[str] = []
    turns, rendered, dropped = _drop_oldest(render, turns, limit, max_new_tokens)
    if dropped:
        notes.append(f"dropped the {dropped} oldest exchange(s) to fit the window")
    report = ContextReport()

    if context is not None:
        fitted = _with_context(render, turns, context, limit, encoder.count, redact)
        if fitted is None:
            notes.append("no room left for the notebook context")
        else:
            rendered, report = fitted

    if layout == "completion" and system_text:
        notes.append("base model: no system prompt, the request is written as a code comment")
    return _prompt(rendered, layout, report.with_notes(*notes), max_new_tokens, window)


def _prompt(rendered: _Rendered, layout: str, report: ContextReport, max_new_tokens: int, window: int) -> Prompt:
    stop = rendered.stop
    if report.included and layout != "completion":
        # Small models echo the context's "# In[n]:" cell headers back; an answer never has them.
        stop += CONTEXT_ECHO_STOP
    return Prompt(
        ids=rendered.ids,
        text=rendered.text,
        kind="completion" if layout == "completion" else "chat",
        stop=stop,
        stop_token_ids=rendered.stop_token_ids,
        max_new_tokens=max_new_tokens,
        window=window,
        report=report.with_notes(rendered.note) if rendered.note else report,
    )


def _renderer(layout: str, tokenizer: Any, encoder: PromptEncoder, system_text: str):
    """``render(turns, context_text)``: the conversation in the model's format, the notebook
    context (if any) put before the last request."""

    def render(turns: list[Turn], context_text: str | None) -> _Rendered:
        if layout == "completion":
            return _completion(encoder, turns, context_text)
        if context_text is not None:
            request = turns[-1][1]
            turns = turns[:-1] + [("user", f"{CONTEXT_INTRO}\n```python\n{context_text}\n```\n\n{request}")]
        if layout == "llama2-inst":
            return _llama2(tokenizer, encoder, system_text, turns)
        return _template(tokenizer, system_text, turns)

    return render


def _normalize(messages: Sequence[ChatMessage], system: str | None) -> tuple[str, list[Turn]]:
    """Strip every input and check the roles alternate user/assistant/…/user."""
    messages = list(messages)
    if messages and messages[0].get("role") == "system":
        if system is not None:
            raise ValueError("Give the system prompt either as `system=` or as the first message, not both.")
        system = str(messages.pop(0).get("content") or "")
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        role = message.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(
                f"Message {i} has role {role!r}, expected {expected!r}: a conversation alternates "
                "user/assistant and ends with the user's request."
            )
        turns.append((role, str(message.get("content") or "").strip()))
    if not turns or turns[-1][0] != "user":
        raise ValueError("A chat prompt needs at least one message and must end with the user's request.")
    return (DEFAULT_SYSTEM_PROMPT if system is None else system.strip()), turns


def _current_source(context: NotebookContext) -> str:
    """The whole current cell: in chat the cursor position does not matter."""
    if context.current is None or not 0 <= context.current < len(context.cells):
        return ""
    source = context.cells[context.current].get("source") or ""
    return "".join(source) if isinstance(source, list) else str(source)


def _layout(spec: ModelSpec, tokenizer: Any, encoder: PromptEncoder) -> str:
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if spec.chat_format == "llama2-inst" and encoder.is_sentencepiece:
        return "llama2-inst"
    if spec.chat_format is not None and has_template:
        return "template"
    return "completion"


def _llama2(tokenizer: Any, encoder: PromptEncoder, system: str, turns: list[Turn]) -> _Rendered:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    text, ids = "", []
    for i in range(0, len(turns), 2):
        user = turns[i][1]
        if i == 0 and system:
            user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{user}".strip()
        if i + 1 < len(turns):
            body = f"[INST] {user} [/INST] {turns[i + 1][1]} "
            text += f"<s>{body}</s>"
            ids += [bos, *encoder.encode(body), eos]
        else:
            body = f"[INST] {user} [/INST]"
            text += f"<s>{body}"
            ids += [bos, *encoder.encode(body)]
    note = ""
    if getattr(tokenizer, "chat_template", None):
        reference = tokenizer.apply_chat_template(_messages(system, turns), tokenize=False)
        if reference != text:
            note = "the tokenizer's chat template differs from Meta's Instruct format; Meta's was used"
            log.warning("%s:\n%r\n%r", note, reference, text)
    return _Rendered(text, ids, (), (eos,), note)


def _template(tokenizer: Any, system: str, turns: list[Turn]) -> _Rendered:
    specials = [s for s in getattr(tokenizer, "all_special_tokens", []) if len(s) > 1]
    messages = [{"role": m["role"], "content": _defuse(m["content"], specials)} for m in _messages(system, turns)]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    # An answer never contains the template's turn markers: each one ends it.
    markers = [tokenizer.convert_tokens_to_ids(s) for s in specials if s in text]
    eos = getattr(tokenizer, "eos_token_id", None)
    stop_ids = tuple(sorted({*markers, *([eos] if isinstance(eos, int) else [])}))
    return _Rendered(text, ids, (), stop_ids)


def _completion(encoder: PromptEncoder, turns: list[Turn], context_text: str | None) -> _Rendered:
    blocks = [context_text] if context_text else []
    for i in range(0, len(turns), 2):
        request = turns[i][1].splitlines() or [""]
        block = (
            "# In[ ]:\n# Task: " + request[0] + "".join(f"\n# {line}" if line else "\n#" for line in request[1:]) + "\n"
        )
        if i + 1 < len(turns):
            block += turns[i + 1][1]
        blocks.append(block)
    text = "\n\n".join(blocks)
    return _Rendered(text, [*encoder.bos_ids, *encoder.encode(text)], CONTINUATION_STOP, encoder.eos_ids)


def _messages(system: str, turns: list[Turn]) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": role, "content": content} for role, content in turns]


def _defuse(text: str, specials: Sequence[str]) -> str:
    """Break special-token strings in content (``<|im_end|>``) with a zero-width space."""
    for special in specials:
        if special in text:
            text = text.replace(special, special[0] + "\u200b" + special[1:])
    return text
