"""What the user asked for, as values: one typed request per kind, one place that builds its prompt.

Every front end (the magics, the ipywidgets chat, the lab's comm, the Python API) turns its
input into one of these specs and hands it to the engine; :func:`build` turns a spec into a
:class:`~jupyter_codellama.prompts.prompt.Prompt` on the engine thread, once the model and
its tokenizer are known. The wording of explain and fix requests lives here and nowhere else.

A spec is also callable: ``spec(loaded)`` is ``build(spec, loaded)``, so the engine treats a
spec and a hand-written prompt builder alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal, Mapping, Sequence

from .chat import ChatMessage, build_chat_prompt
from .edit import EditTarget, edit_question, fim_parts, split_selection
from .infill import build_infill_prompt
from .notebook_context import _ANSI, NotebookContext, prompt_redactor
from .prompt import Prompt

__all__ = [
    "ChatRequest",
    "EditRequest",
    "ExplainRequest",
    "FixRequest",
    "InfillRequest",
    "PromptSpec",
    "TextRequest",
    "TokenRequest",
    "build",
    "edit_by_infilling",
    "explain_question",
    "fix_question",
]

Namespace = Mapping[str, Any]


def _namespace() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


class _Spec:
    """Shared behaviour: a spec builds its own prompt when called with a loaded model."""

    max_new_tokens: int

    def __call__(self, loaded: Any) -> Prompt:
        return build(self, loaded)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ChatRequest(_Spec):
    """A conversation that ends with the user's request; ``context`` is the notebook, if any.

    ``namespace`` is the kernel's: its secrets' values are redacted from every message, with or
    without notebook context.
    """

    messages: Sequence[ChatMessage]
    system: str | None = None
    context: NotebookContext | None = None
    namespace: Namespace = _namespace()
    max_new_tokens: int = 512


@dataclass(frozen=True)
class InfillRequest(_Spec):
    """Fill the cursor between ``prefix`` and ``suffix`` (inline completion, ``complete``)."""

    prefix: str
    suffix: str = ""
    mode: Literal["psm", "spm"] = "psm"
    context: NotebookContext | None = None
    namespace: Namespace = _namespace()
    max_new_tokens: int = 64


@dataclass(frozen=True, kw_only=True)
class _CellTask(_Spec):
    """A request about one cell: its ``source``, named for the model by ``label`` (``In[3]``, "the
    active cell"); ``history`` is the conversation so far, ``context`` the other cells."""

    source: str
    label: str = "this cell"
    history: Sequence[ChatMessage] = ()
    context: NotebookContext | None = None
    namespace: Namespace = _namespace()
    max_new_tokens: int = 512


@dataclass(frozen=True, kw_only=True)
class ExplainRequest(_CellTask):
    """Explain one cell."""


@dataclass(frozen=True, kw_only=True)
class FixRequest(_CellTask):
    """Explain the error a cell raised and propose the corrected cell."""

    error: str


@dataclass(frozen=True, kw_only=True)
class EditRequest(_CellTask):
    """Rewrite a cell, or the ``selection`` of it (character offsets, end exclusive), as the
    ``instruction`` says; the text outside the selection never changes."""

    instruction: str
    selection: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("An edit needs an instruction, e.g. 'add type hints'.")
        self.target  # noqa: B018 - a selection outside the cell is refused here, before any work

    @property
    def target(self) -> EditTarget:
        return split_selection(self.source, self.selection)


@dataclass(frozen=True)
class TextRequest(_Spec):
    """A raw text prompt (the Python API): redacted, tokenized as it is."""

    text: str
    namespace: Namespace = _namespace()
    max_new_tokens: int = 256


@dataclass(frozen=True)
class TokenRequest(_Spec):
    """Token ids, passed as given: they are not text the user typed."""

    ids: Sequence[int]
    max_new_tokens: int = 256


PromptSpec = ChatRequest | InfillRequest | ExplainRequest | FixRequest | EditRequest | TextRequest | TokenRequest


def explain_question(source: str, label: str) -> str:
    return (
        f"Explain what this notebook cell ({label}) does, step by step, briefly. "
        f"Mention anything that looks wrong.\n\n```python\n{source}\n```"
    )


def fix_question(source: str, error: str, label: str) -> str:
    return (
        f"This notebook cell ({label}) raised an error.\n\n```python\n{source}\n```\n\n"
        f"Error:\n```\n{_ANSI.sub('', error).strip()}\n```\n\n"
        "Explain the cause in one or two sentences, then give the "
        "corrected code for the whole cell in one ```python block."
    )


def as_chat(spec: ExplainRequest | FixRequest) -> ChatRequest:
    """An explain or fix request is a chat whose last message is our wording of it."""
    if isinstance(spec, FixRequest):
        question = fix_question(spec.source, spec.error, spec.label)
    else:
        question = explain_question(spec.source, spec.label)
    return ChatRequest(
        messages=[*spec.history, {"role": "user", "content": question}],
        context=spec.context,
        namespace=spec.namespace,
        max_new_tokens=spec.max_new_tokens,
    )


def build(spec: PromptSpec, loaded: Any) -> Prompt:
    """The prompt of ``spec`` for the loaded model (its tokenizer and catalogue entry).

    Runs on the engine thread: the tokenizer is not safe to use from two threads at once.
    """
    try:
        builder = _BUILDERS[type(spec)]
    except KeyError:
        raise TypeError(f"Not a request spec: {type(spec).__name__}.") from None
    return builder(spec, loaded)


def _chat(spec: ChatRequest, loaded: Any) -> Prompt:
    return build_chat_prompt(
        loaded.tokenizer,
        loaded.spec,
        spec.messages,
        spec.system,
        context=spec.context,
        namespace=_redaction_namespace(spec),
        max_new_tokens=spec.max_new_tokens,
    )


def _infill(spec: InfillRequest, loaded: Any) -> Prompt:
    return build_infill_prompt(
        loaded.tokenizer,
        loaded.spec,
        spec.prefix,
        spec.suffix,
        mode=spec.mode,
        context=spec.context,
        namespace=_redaction_namespace(spec),
        max_new_tokens=spec.max_new_tokens,
    )


def edit_by_infilling(model_spec: Any) -> bool:
    """Whether an edit is asked as a "rewrite the middle" infilling prompt (a base model that
    fills in the middle) rather than in chat form; the answer is then the new part as written."""
    return bool(model_spec.supports_infill) and not model_spec.chat_format


def _edit(spec: EditRequest, loaded: Any) -> Prompt:
    target = spec.target
    if edit_by_infilling(loaded.spec):
        prefix, suffix = fim_parts(target, spec.instruction)
        return _infill(
            InfillRequest(
                prefix=prefix,
                suffix=suffix,
                context=spec.context,
                namespace=spec.namespace,
                max_new_tokens=spec.max_new_tokens,
            ),
            loaded,
        )
    question = edit_question(target, spec.instruction, spec.label)
    return _chat(
        ChatRequest(
            messages=[*spec.history, {"role": "user", "content": question}],
            context=spec.context,
            namespace=spec.namespace,
            max_new_tokens=spec.max_new_tokens,
        ),
        loaded,
    )


def _text(spec: TextRequest, loaded: Any) -> Prompt:
    text = prompt_redactor(None, spec.namespace)(spec.text)
    return Prompt(
        ids=list(loaded.tokenizer(text)["input_ids"]), text=text, kind="raw", max_new_tokens=spec.max_new_tokens
    )


def _tokens(spec: TokenRequest, loaded: Any) -> Prompt:
    return Prompt(ids=list(spec.ids), text="", kind="raw", max_new_tokens=spec.max_new_tokens)


def _redaction_namespace(spec: ChatRequest | InfillRequest) -> Namespace:
    """The kernel's namespace; a context's own when the spec was given none."""
    if not spec.namespace and spec.context is not None and spec.context.namespace is not None:
        return spec.context.namespace
    return spec.namespace


_BUILDERS: dict[type, Callable[[Any, Any], Prompt]] = {
    ChatRequest: _chat,
    InfillRequest: _infill,
    ExplainRequest: lambda spec, loaded: _chat(as_chat(spec), loaded),
    FixRequest: lambda spec, loaded: _chat(as_chat(spec), loaded),
    EditRequest: _edit,
    TextRequest: _text,
    TokenRequest: _tokens,
}


def with_budget(spec: PromptSpec, max_new_tokens: int) -> PromptSpec:
    """The same request with another answer budget (the room the prompt leaves)."""
    return replace(spec, max_new_tokens=max_new_tokens)
