"""The prompt layer: what the model is shown, and what of its answer reaches the notebook.

Pure functions, no model needed; the engine, the comm handler and the magics call:

* :func:`build_chat_prompt` — chat / ``%%codellama`` requests (Instruct format or template);
* :func:`build_infill_prompt` — inline completion (Code Llama FIM, or prefix continuation);
* :func:`context_preview` — exactly what a prompt sends, and what context went in or was cut;
* :func:`extract_code` / :func:`clean_completion` — answers → cell code / ghost text;
* :func:`interpolate` — opt-in ``{var}``, ``In[n]``, ``Out[n]``, ``Err[n]``.
"""

from .chat import DEFAULT_SYSTEM_PROMPT, ChatMessage, build_chat_prompt
from .infill import build_infill_prompt, infill_ids
from .interpolate import Interpolation, interpolate
from .notebook_context import (
    Cell,
    CellOutput,
    ContextReport,
    ContextSettings,
    NotebookContext,
    approximate_tokens,
    build_context,
)
from .postprocess import clean_completion, extract_code
from .prompt import Prompt, PromptTooLongError, context_preview

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "Cell",
    "CellOutput",
    "ChatMessage",
    "ContextReport",
    "ContextSettings",
    "Interpolation",
    "NotebookContext",
    "Prompt",
    "PromptTooLongError",
    "approximate_tokens",
    "build_chat_prompt",
    "build_context",
    "build_infill_prompt",
    "clean_completion",
    "context_preview",
    "extract_code",
    "infill_ids",
    "interpolate",
]
