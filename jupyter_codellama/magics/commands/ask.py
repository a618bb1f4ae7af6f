"""``%%codellama [options]``: the cell body is the request; the answer's code goes into a cell."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from IPython.core.error import UsageError

from ...prompts.chat import ChatMessage
from ...prompts.requests import ChatRequest
from ...session import get_session, user_variables
from .. import options
from ..command import Command
from ..history import notebook_context
from ..insert import insert, insert_answer_code
from ..model import ensure_model
from ..parsing import INSERT_CHOICES, MAX_NEW_TOKENS_HELP, PREVIEW_HELP, new_parser
from ..preview import preview
from ..stream import stream

if TYPE_CHECKING:
    from .. import CodeLlamaMagics


def parser():
    p = new_parser("%%codellama", "Ask Code Llama; the cell body is the request.")
    p.add_argument("-m", "--model", metavar="NAME", help="model for this request (loaded first if needed)")
    p.add_argument("--max-new-tokens", type=int, metavar="N", help=MAX_NEW_TOKENS_HELP)
    p.add_argument("--temperature", type=float, metavar="T", help="0 = greedy (default: CodeLlama.temperature)")
    p.add_argument(
        "--format",
        choices=("code", "markdown"),
        default="code",
        help="code (default): the answer's code goes into a new cell; markdown: the answer is only shown",
    )
    p.add_argument("--insert", choices=INSERT_CHOICES, help="where the code goes (default: below for code)")
    p.add_argument(
        "--context",
        choices=("none", "cell", "notebook"),
        default="notebook",
        help="what the model sees besides the request (default: notebook: earlier cells, outputs, "
        "errors and live variables)",
    )
    p.add_argument("-o", "--output", metavar="VAR", help="also store the answer (its code for --format code) in VAR")
    p.add_argument(
        "--interpolate", action="store_true", help="replace {var}, In[n], Out[n], Err[n] in the request (opt-in)"
    )
    p.add_argument("--preview", action="store_true", help=PREVIEW_HELP)
    return p


def run_cell(magic: CodeLlamaMagics, args: argparse.Namespace, body: str):
    request = body.strip()
    if not request:
        raise UsageError(
            "Write the request in the cell body, e.g.\n%%codellama\nplot the 'price' column of df as a histogram"
        )
    if args.output is not None and not args.output.isidentifier():
        raise UsageError(f"-o/--output needs a variable name, got {args.output!r}.")
    max_new, temperature = options.max_new_tokens(magic, args), options.temperature(magic, args)
    if args.interpolate:
        request = _interpolate(magic.shell, request)
    ensure_model(magic, args.model)
    session = get_session()
    spec = _chat_spec(
        magic.shell,
        [*session.history, {"role": "user", "content": request}],
        notebook_context(magic.shell, args.context),
        max_new,
    )
    if args.preview:
        return preview(magic, spec)
    result = stream(
        magic,
        "chat",
        spec,
        max_new_tokens=max_new,
        temperature=temperature,
        meta={"request": request, "format": args.format, "context": args.context},
    )
    if result is None:
        return None
    session.add_exchange(request, result.text)
    value = result.text
    if args.format == "code":
        value = (
            insert_answer_code(
                magic.shell,
                result.text,
                args.insert or "below",
                "(The answer holds no Python code: nothing was inserted.)",
            )
            or result.text
        )
    elif args.insert in ("below", "replace"):
        insert(magic.shell, result.text, args.insert)
    if args.output and magic.shell is not None:
        magic.shell.user_ns[args.output] = value
    return None


def _chat_spec(shell, messages: list[ChatMessage], context, max_new: int) -> ChatRequest:
    """A chat request; the kernel's namespace redacts it even without context."""
    namespace = context.namespace if context is not None else user_variables(shell)
    return ChatRequest(messages=messages, context=context, namespace=namespace, max_new_tokens=max_new)


def _interpolate(shell, request: str) -> str:
    from ...prompts import interpolate

    errors = {n: e.describe() for n, e in get_session().errors.items()}
    result = interpolate(request, shell.user_ns, errors=errors)  # In/Out live here too
    if result.substituted or result.left_as_is:
        print(result.summary())
    return result.text


COMMAND = Command(parser, run_cell=run_cell)
