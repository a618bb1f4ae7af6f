"""Inline completion prompts: Code Llama infilling (FIM), or prefix continuation without it.

Code Llama 7B/13B (base and Instruct) were trained to fill the middle (paper §2.3). Layouts,
exactly as Meta's reference ``infilling_prompt_tokens`` and transformers' CodeLlamaTokenizer:

* PSM: ``[BOS, <PRE>] + enc(prefix) + [<SUF>] + enc_nospace(suffix) + [<MID>]``
* SPM (``suffix_first``): ``[BOS, <PRE>, <SUF>] + enc_nospace(suffix) + [<MID>] + enc(prefix)``

``enc`` adds SentencePiece's implicit leading space, ``enc_nospace`` does not (the suffix is
encoded without it in *both* layouts; transformers agrees). Generation ends at ``<EOT>``. PSM
is the default: with SPM the prefix is the last thing encoded, so a prefix that ends mid-word
gets tokens the model rarely saw before a continuation.

Models without infilling (34B, the Python variants, the embedded model) get the notebook
before the cursor as a plain prompt to continue; the suffix is then used only by
:func:`~jupyter_codellama.prompts.postprocess.clean_completion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, cast

from ..models import ModelSpec
from .encoding import PromptEncoder, prompt_encoder
from .notebook_context import NotebookContext, build_context, prompt_redactor
from .prompt import Prompt, PromptTooLongError, prompt_budget
from .redact import Redactor

__all__ = ["FimTokens", "InfillMode", "build_infill_prompt", "fim_tokens", "infill_ids"]

InfillMode = Literal["psm", "spm"]

#: Where a continuation should end: the next cell header of our notebook rendering.
CONTINUATION_STOP = ("\n# In[",)
# Sent instead of an empty suffix: training files end with a newline, so "<SUF>\n" is what the
# model saw at the end of a file (Tabby does the same).
_EMPTY_SUFFIX = "\n"


@dataclass(frozen=True)
class FimTokens:
    pre: int
    suf: int
    mid: int
    eot: int


def fim_tokens(encoder: PromptEncoder) -> FimTokens:
    """The ids of ``▁<PRE> ▁<SUF> ▁<MID> ▁<EOT>``; a clear error when the vocabulary lacks them."""
    ids = [encoder.token_id(t) for t in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")]
    if None in ids or not encoder.is_sentencepiece:
        raise ValueError(
            f"{type(encoder.tokenizer).__name__} has no Code Llama infilling tokens; "
            "use a model whose catalogue entry says supports_infill"
        )
    return FimTokens(*cast("list[int]", ids))  # no None: checked above


def infill_ids(tokenizer: Any, prefix: str, suffix: str, *, mode: InfillMode = "psm") -> list[int]:
    """Code Llama's infilling ids for exactly this prefix and suffix (no context, no budget)."""
    encoder = prompt_encoder(tokenizer)
    fim = fim_tokens(encoder)
    bos = list(encoder.bos_ids)
    if mode == "psm":
        return bos + [fim.pre] + encoder.encode(prefix) + [fim.suf] + encoder.encode_nospace(suffix) + [fim.mid]
    if mode == "spm":
        return bos + [fim.pre, fim.suf] + encoder.encode_nospace(suffix) + [fim.mid] + encoder.encode(prefix)
    raise ValueError(f"Unknown infilling mode {mode!r}: use 'psm' or 'spm'.")


def _infill_text(prefix: str, suffix: str, mode: InfillMode, bos: bool) -> str:
    start = "<s>" if bos else ""
    if mode == "psm":
        return f"{start}<PRE> {prefix} <SUF>{suffix} <MID>"
    return f"{start}<PRE> <SUF>{suffix} <MID> {prefix}"


def build_infill_prompt(
    tokenizer: Any,
    spec: ModelSpec,
    prefix: str,
    suffix: str = "",
    *,
    mode: InfillMode = "psm",
    context: NotebookContext | None = None,
    namespace: Mapping[str, Any] | None = None,
    max_new_tokens: int = 128,
    max_prompt_tokens: int | None = None,
) -> Prompt:
    """The completion prompt for the cursor between ``prefix`` and ``suffix`` of the current cell.

    ``context`` adds the rest of the notebook and the live variables within the budget
    (window − ``max_new_tokens``, capped by ``max_prompt_tokens``). Whether infilling is used
    comes from ``spec.supports_infill``, never from the model's name. Every text is redacted
    with the values of ``namespace`` (the kernel's; default: the context's).
    """
    if mode not in ("psm", "spm"):
        raise ValueError(f"Unknown infilling mode {mode!r}: use 'psm' or 'spm'.")
    window, limit = prompt_budget(spec, tokenizer, max_new_tokens, max_prompt_tokens)
    encoder = prompt_encoder(tokenizer)
    redact = prompt_redactor(context, namespace)
    if not spec.supports_infill:
        return _continuation_prompt(encoder, prefix, context, redact, window, limit, max_new_tokens)

    fim = fim_tokens(encoder)
    overhead = len(encoder.bos_ids) + 3
    if limit < overhead + len(encoder.encode_nospace(_EMPTY_SUFFIX)):
        raise PromptTooLongError(f"max_prompt_tokens={limit} leaves no room for an infilling prompt")
    budget = limit - overhead
    while True:  # token counts of pieces are estimates: shrink until the real ids fit
        allocated = build_context(prefix, suffix, context, budget=budget, count_tokens=encoder.count, redact=redact)
        suffix_text = allocated.suffix or _EMPTY_SUFFIX
        ids = infill_ids(tokenizer, allocated.prefix, suffix_text, mode=mode)
        if len(ids) <= limit or budget <= 0:
            break
        budget -= len(ids) - limit
    report = allocated.report
    if not allocated.suffix:
        report = report.with_notes("empty suffix sent as a newline (the end of a file)")
    return Prompt(
        ids=ids,
        text=_infill_text(allocated.prefix, suffix_text, mode, bool(encoder.bos_ids)),
        kind=mode,
        stop_token_ids=(fim.eot, *encoder.eos_ids),
        max_new_tokens=max_new_tokens,
        window=window,
        report=report,
    )


def split_lead(text: str) -> tuple[str, str]:
    """Split trailing indentation (and the line break before it) off ``text``.

    ``"if x:\\n    "`` → ``("if x:", "\\n    ")``; ``"y = "`` → ``("y =", " ")``. Tokenizers merge
    whitespace with the word after it (``"\\n   "`` + ``" y"``), so a prompt that ends in
    whitespace ends on a token the model rarely saw there, and it answers with empty lines. The
    prompt ends before it instead, and the engine makes the answer start with it (token healing).
    """
    body = text.rstrip(" \t")
    if body.endswith("\n"):
        body = body[:-1]
    if not body.strip():
        return text, ""
    return body, text[len(body) :]


def _continuation_prompt(
    encoder: PromptEncoder,
    prefix: str,
    context: NotebookContext | None,
    redact: Redactor,
    window: int,
    limit: int,
    max_new_tokens: int,
) -> Prompt:
    budget = limit - len(encoder.bos_ids)
    while True:
        allocated = build_context(
            prefix, "", context, budget=budget, count_tokens=encoder.count, use_suffix=False, redact=redact
        )
        body, lead = split_lead(allocated.prefix)
        ids = list(encoder.bos_ids) + encoder.encode(body)
        if len(ids) <= limit or budget <= 0:
            break
        budget -= len(ids) - limit
    return Prompt(
        ids=ids,
        lead=lead,
        text=allocated.prefix,
        kind="continuation",
        stop=CONTINUATION_STOP,
        stop_token_ids=encoder.eos_ids,
        max_new_tokens=max_new_tokens,
        window=window,
        report=allocated.report.with_notes("this model cannot fill in the middle: it continues the prefix"),
    )
