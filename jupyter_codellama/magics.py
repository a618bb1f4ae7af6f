"""``%%codellama`` and ``%codellama``: the interface that works in every front end.

    %%codellama [options]        the cell body is the request; the answer streams as Markdown,
                                 its code goes into a new cell below
    %codellama SUBCOMMAND ...    load, status, models, unload, explain, fix, complete, chat,
                                 config, reset, help

Heavy imports (torch, transformers) happen on the first request, never at ``%load_ext``.
"""
from __future__ import annotations

import re
import time
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import MagicArgumentParser
from IPython.display import Markdown, display
from IPython.utils.process import arg_split

from .config import get_config
from .engine import EngineUser
from .session import get_session, is_assistant_cell, user_variables

_SUBCOMMANDS = ("load", "status", "models", "unload", "explain", "fix", "complete", "chat",
                "config", "reset", "help")
_FILL_ME = "<FILL_ME>"
_CELL_REF = re.compile(r"^(?:In\[(\d+)\]|(\d+))$")
_UPDATE_EVERY_S = 0.15

HELP = """\
%%codellama [options]      Ask for code; the cell body is the request.
  -m/--model NAME            model for this request (loaded first if needed)
  --max-new-tokens N         longest answer (default: CodeLlama.max_new_tokens)
  --temperature T            0 = greedy (default: CodeLlama.temperature)
  --format code|markdown     code (default): the answer's code goes into a new cell;
                             markdown: the answer is only shown
  --insert below|replace|none  where the code goes (default: below for code)
  --context none|cell|notebook what the model sees besides the request (default: notebook:
                             earlier cells, outputs, errors and live variables)
  -o/--output VAR            also store the answer (its code for --format code) in VAR
  --interpolate              replace {var}, In[n], Out[n], Err[n] in the request (opt-in)
  --preview                  show exactly what the model would be sent; generate nothing

%codellama load [MODEL] [--4bit|--8bit|--no-quant|--nf4|--int8] [--gpu-memory X] [--cpu-memory Y] [--device D]
                             MODEL: a catalogue name, a folder, a hub id, a .gguf file or
                             owner/repo/file.gguf; on a CPU --4bit/--8bit run the C kernel
%codellama load --endpoint URL MODEL
                             generate on an OpenAI-compatible server (vLLM, llama-server,
                             transformers serve); MODEL is the name it serves
%codellama status | models | unload | config | reset | help
%codellama explain [In[n]]   explain a cell (default: the previous one)
%codellama fix [In[n]]       explain the last error and put corrected code in a new cell
%codellama complete [In[n]]  fill the <FILL_ME> marker of a cell (Code Llama infilling)
%%codellama complete         ... of the code in this cell's body
  --preview                  (explain, fix, complete) show exactly what would be sent
%codellama chat              a chat widget (for front ends without the JupyterLab extension)

Settings: %config CodeLlama.<name> = value   (see %codellama config)"""


def _parser(prog: str, description: str) -> MagicArgumentParser:
    return MagicArgumentParser(prog=prog, description=description, add_help=True)


def _cell_parser() -> MagicArgumentParser:
    p = _parser("%%codellama", "Ask Code Llama; the cell body is the request.")
    p.add_argument("-m", "--model")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--format", choices=("code", "markdown"), default="code")
    p.add_argument("--insert", choices=("below", "replace", "none"))
    p.add_argument("--context", choices=("none", "cell", "notebook"), default="notebook")
    p.add_argument("-o", "--output", metavar="VAR")
    p.add_argument("--interpolate", action="store_true")
    p.add_argument("--preview", action="store_true",
                   help="show exactly what would be sent (and what context was cut); generate nothing")
    return p


def _load_parser() -> MagicArgumentParser:
    p = _parser("%codellama load", "Load a model (default: CodeLlama.model).")
    p.add_argument("model", nargs="?")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--4bit", dest="quantization", action="store_const", const="4bit")
    q.add_argument("--8bit", dest="quantization", action="store_const", const="8bit")
    q.add_argument("--no-quant", dest="quantization", action="store_const", const="none")
    q.add_argument("--nf4", dest="quantization", action="store_const", const="nf4",
                   help="bitsandbytes NF4 (on a CPU: slow; --4bit runs the CPU kernel)")
    q.add_argument("--int8", dest="quantization", action="store_const", const="int8")
    p.add_argument("--gpu-memory")
    p.add_argument("--cpu-memory")
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--endpoint", help="generate on this OpenAI-compatible server (http://host:8000/v1); "
                   "MODEL is the name it serves")
    return p


def _target_parser(name: str, description: str) -> MagicArgumentParser:
    p = _parser(f"%codellama {name}", description)
    p.add_argument("cell", nargs="?", help="In[n] or n (default: the previous cell)")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--insert", choices=("below", "replace", "none"))
    p.add_argument("--preview", action="store_true",
                   help="show exactly what would be sent (and what context was cut); generate nothing")
    return p


def _parse(parser: MagicArgumentParser, args: list[str]):
    try:
        return parser.parse_args(args)
    except SystemExit:  # --help printed the usage
        return None


# ---------------------------------------------------------------------------------------------
# Showing an answer as it streams


class _StreamView:
    """Markdown updated in place in a kernel (throttled); plain text printed in a terminal."""

    def __init__(self, shell) -> None:
        self._rich = getattr(shell, "kernel", None) is not None
        self._shown = ""
        self._last = 0.0
        self._handle = display(Markdown("*…*"), display_id=True) if self._rich else None

    def update(self, text: str) -> None:
        if text == self._shown:
            return
        if not self._rich:
            print(text[len(self._shown):], end="", flush=True)
            self._shown = text
        elif time.monotonic() - self._last >= _UPDATE_EVERY_S:
            self._handle.update(Markdown(text))
            self._shown, self._last = text, time.monotonic()

    def finish(self, text: str, footer: str, metadata: dict | None = None) -> None:
        if self._rich:
            self._handle.update(Markdown(f"{text}\n\n*{footer}*"), metadata=metadata or {})
        else:
            print(text[len(self._shown):], end="", flush=True)
            print(f"\n[{footer}]")
        self._shown = text


class _ProgressView:
    """A progress bar (ipywidgets in a kernel) or stage lines (elsewhere) for model loading."""

    def __init__(self, shell, title: str) -> None:
        self._bar = self._label = None
        self._last_stage = ""
        if getattr(shell, "kernel", None) is not None:
            try:
                import ipywidgets as w

                self._bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="Loading")
                self._label = w.Label(title)
                display(w.HBox([self._bar, self._label]))
                return
            except ImportError:
                pass
        print(title, flush=True)

    def update(self, progress: dict | None) -> None:
        if not progress:
            return
        stage, fraction = str(progress.get("stage", "")), float(progress.get("fraction", 0.0))
        if self._bar is not None:
            self._bar.value, self._label.value = fraction, stage
            return
        base = stage.split(" (")[0]
        if base != self._last_stage:
            print(f"  {fraction:4.0%}  {base}", flush=True)
            self._last_stage = base

    def close(self, message: str, ok: bool) -> None:
        if self._bar is not None:
            self._bar.value = 1.0 if ok else self._bar.value
            self._bar.bar_style = "success" if ok else "danger"
            self._label.value = message
        # Printed too: a saved notebook (or one viewed without widgets) keeps the outcome.
        print(message, flush=True)


def _footer(result, model: str) -> str:
    t = result.timings
    parts = [model, f"{len(result.tokens)} tokens"]
    if t.get("first_token_s") is not None:
        parts.append(f"first token {t['first_token_s']:.2f} s")
    if t.get("tokens_per_s"):
        parts.append(f"{t['tokens_per_s']:.1f} tok/s")
    parts.append(f"stop: {result.stop_reason}")
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------
# The magics


@magics_class
class CodeLlamaMagics(EngineUser, Magics):
    def __init__(self, shell=None, engine=None) -> None:
        super().__init__(shell)
        self._engine = engine

    @property
    def settings(self):
        return get_config()

    @line_cell_magic
    def codellama(self, line: str, cell: str | None = None) -> Any:
        """Code Llama in the kernel. ``%codellama help`` lists everything."""
        if cell is None:
            return self._line(line)
        words = arg_split(line, posix=True)
        if words and words[0] == "complete":
            return self._complete(words[1:], code=cell)
        return self._ask(line, cell)

    # -- %%codellama --------------------------------------------------------------------------

    def _ask(self, line: str, cell: str) -> None:
        args = _parse(_cell_parser(), arg_split(line, posix=True))
        if args is None:
            return
        request = cell.strip()
        if not request:
            raise UsageError("Write the request in the cell body, e.g.\n%%codellama\n"
                             "plot the 'price' column of df as a histogram")
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o/--output needs a variable name, got {args.output!r}.")
        max_new = self._positive(args.max_new_tokens, self.settings.max_new_tokens, "--max-new-tokens")
        temperature = self._temperature(args.temperature)
        if args.interpolate:
            request = self._interpolate(request)
        self._ensure_model(args.model)
        context = self._context(args.context)
        session = get_session()
        build = self._chat_builder([*session.history, {"role": "user", "content": request}], context, max_new)
        if args.preview:
            return self._preview(build)
        result = self._stream("chat", build, max_new_tokens=max_new, temperature=temperature,
                              meta={"request": request, "format": args.format, "context": args.context})
        if result is None:
            return
        session.add_exchange(request, result.text)
        value = result.text
        if args.format == "code":
            from .prompts import extract_code

            code = extract_code(result.text)
            value = code or result.text
            if not code:
                print("(The answer holds no Python code: nothing was inserted.)")
            else:
                self._insert(code, args.insert or "below")
        elif args.insert in ("below", "replace"):
            self._insert(result.text, args.insert)
        if args.output:
            self.shell.user_ns[args.output] = value

    # -- %codellama ---------------------------------------------------------------------------

    def _line(self, line: str) -> Any:
        words = arg_split(line, posix=True)
        if not words or words[0] in ("help", "-h", "--help"):
            print(HELP)
            return None
        command, rest = words[0], words[1:]
        if command not in _SUBCOMMANDS:
            raise UsageError(f"Unknown subcommand {command!r}. Use one of: {', '.join(_SUBCOMMANDS)} "
                             "(%codellama help).")
        return getattr(self, "_" + command)(rest)

    def _load(self, rest: list[str]) -> None:
        args = _parse(_load_parser(), rest)
        if args is None:
            return
        options = {k: getattr(args, k) for k in ("quantization", "gpu_memory", "cpu_memory", "device", "dtype",
                                                 "endpoint")}
        from .engine.loading import parse_memory

        for flag in ("gpu_memory", "cpu_memory"):
            if options[flag] is not None:
                try:
                    parse_memory(options[flag])
                except ValueError as exc:
                    raise UsageError(f"--{flag.replace('_', '-')}: {exc}") from None
        self._load_with_progress(args.model, **{k: v for k, v in options.items() if v is not None})

    def _status(self, rest: list[str]) -> Markdown:
        self._no_args("status", rest)
        s = self.engine.status()
        rows = [("state", s["state"])]
        if s["state"] == "loading" and s.get("progress"):
            rows.append(("progress", f"{s['progress']['fraction']:.0%} — {s['progress']['stage']}"))
        if s["state"] == "error":
            rows.append(("error", s.get("error", "")))
        for key in ("model", "repo_id", "backend", "kernel", "quantization", "dtype", "device",
                    "device_map", "memory", "supports_infill", "chat_format", "context_length",
                    "endpoint", "served_model", "latency_ms"):
            if key in s:
                rows.append((key, s[key]))
        rows.append(("prefix cache", s["prefix_cache"]))
        return Markdown("| | |\n|---|---|\n" + "\n".join(f"| {k} | {_cell(v)} |" for k, v in rows))

    def _models(self, rest: list[str]) -> Markdown:
        self._no_args("models", rest)
        from .models import CATALOGUE

        lines = ["| name | hub id | infilling | chat | context | NF4 weights |", "|---|---|---|---|---|---|"]
        for s in CATALOGUE:
            memory = "0.5 GB fp32 (CPU)" if s.family == "embedded" else f"≈{s.weight_bytes('4bit') / 1e9:.1f} GB"
            lines.append(f"| `{s.name}` | {s.repo_id} | {'yes' if s.supports_infill else '–'} | "
                         f"{s.chat_format or '–'} | {s.context_length} | {memory} |")
        return Markdown("\n".join(lines) + "\n\nAny local folder or other hub id works too.")

    def _unload(self, rest: list[str]) -> None:
        self._no_args("unload", rest)
        self.engine.unload()
        print("Model unloaded; its memory is free.")

    def _config(self, rest: list[str]) -> Markdown:
        self._no_args("config", rest)
        cfg = self.settings
        lines = ["| setting | value | |", "|---|---|---|"]
        for name, trait in sorted(cfg.traits(config=True).items()):
            help_text = (trait.help or "").split(". ")[0].replace("|", "\\|")
            lines.append(f"| `{name}` | `{getattr(cfg, name)!r}` | {help_text} |")
        return Markdown("\n".join(lines) + "\n\nChange with `%config CodeLlama.<name> = value`.")

    def _reset(self, rest: list[str]) -> None:
        self._no_args("reset", rest)
        get_session().reset()
        print("Chat history cleared.")

    def _help(self, rest: list[str]) -> None:
        print(HELP)

    def _chat(self, rest: list[str]):
        self._no_args("chat", rest)
        from .widgets import ChatWidget

        return ChatWidget(self.shell, engine=self.engine).widget

    def _explain(self, rest: list[str]) -> Markdown | None:
        args = _parse(_target_parser("explain", "Explain a cell."), rest)
        if args is None:
            return
        if args.insert not in (None, "none"):
            raise UsageError("explain shows its answer; it inserts nothing.")
        number, source = self._cell_source(args.cell)
        max_new = self._positive(args.max_new_tokens, self.settings.max_new_tokens, "--max-new-tokens")
        request = ("Explain what this notebook cell does, step by step, briefly:\n\n"
                   f"```python\n{source}\n```")
        self._ensure_model(None)
        build = self._chat_builder([{"role": "user", "content": request}], self._context("notebook"), max_new)
        if args.preview:
            return self._preview(build)
        self._stream("chat", build, max_new_tokens=max_new, temperature=self._temperature(None),
                     meta={"explain": number})
        return None

    def _fix(self, rest: list[str]) -> Markdown | None:
        args = _parse(_target_parser("fix", "Explain the last error and propose a fix."), rest)
        if args is None:
            return
        session = get_session()
        if args.cell is not None:
            number = self._cell_number(args.cell)
            error = session.errors.get(number)
            if error is None:
                raise UsageError(f"In[{number}] raised no error that was recorded (errors are recorded "
                                 "once the extension is loaded).")
        else:
            error = session.last_error
            if error is None:
                raise UsageError("No error to fix: no cell has raised an exception since "
                                 "%load_ext jupyter_codellama.")
        max_new = self._positive(args.max_new_tokens, self.settings.max_new_tokens, "--max-new-tokens")
        request = (
            f"This notebook cell (In[{error.execution_count}]) raised an error.\n\n"
            f"```python\n{error.source}\n```\n\nError:\n```\n{error.describe()}\n```\n\n"
            "Explain the cause in one or two sentences, then give the corrected code for the "
            "whole cell in one ```python block."
        )
        self._ensure_model(None)
        build = self._chat_builder([{"role": "user", "content": request}], self._context("notebook"), max_new)
        if args.preview:
            return self._preview(build)
        result = self._stream("chat", build, max_new_tokens=max_new, temperature=self._temperature(None),
                              meta={"fix": error.execution_count})
        if result is None:
            return None
        from .prompts import extract_code

        code = extract_code(result.text)
        if code:
            self._insert(code, args.insert or "below")
        else:
            print("(The answer holds no corrected code: nothing was inserted.)")
        return None

    def _complete(self, rest: list[str], code: str | None = None) -> Markdown | None:
        args = _parse(_target_parser("complete", f"Fill the {_FILL_ME} marker of a cell."), rest)
        if args is None:
            return
        if code is None:
            number, code = self._cell_source(args.cell)
            where = f"In[{number}]"
        else:
            where = "this cell"
        if code.count(_FILL_ME) != 1:
            raise UsageError(f"{where} must contain exactly one {_FILL_ME} marker where the code should go, "
                             f"e.g.\ndef mean(xs):\n    {_FILL_ME}\n    return result")
        prefix, suffix = code.split(_FILL_ME)
        max_new = self._positive(args.max_new_tokens, 256, "--max-new-tokens")
        self._ensure_model(None)
        namespace = user_variables(self.shell)

        def build(loaded):
            from .prompts import build_infill_prompt

            return build_infill_prompt(loaded.tokenizer, loaded.spec, prefix, suffix, namespace=namespace,
                                       max_new_tokens=max_new)

        if args.preview:
            return self._preview(build)
        result = self._stream("generate", build, max_new_tokens=max_new, temperature=0.0,
                              meta={"complete": where}, show=False)
        if result is None:
            return None
        from .prompts import clean_completion

        infilling = bool(self.engine.status().get("supports_infill"))
        middle = (
            result.text if infilling and result.stop_reason == "eos" else clean_completion(result.text, prefix, suffix)
        )
        filled = prefix + middle + suffix
        how = "infilling" if infilling else "prefix continuation (this model has no infilling)"
        display(Markdown(f"```python\n{filled}\n```\n\n*filled by {how}: {len(middle)} characters*"),
                metadata={"jupyter_codellama": {"complete": where, "middle": middle,
                                                "stop_reason": result.stop_reason}})
        self._insert(filled, args.insert or "below")
        return None

    # -- shared steps -------------------------------------------------------------------------

    def _preview(self, build: Callable) -> Markdown:
        from .prompts import context_preview

        loaded = self.engine.loaded
        # Built on the engine thread: the tokenizer must not be used beside it.
        preview = self.engine.run_with_model(lambda model: context_preview(build(model))).wait()
        rows = [f"- {i['kind']}: {i['label']} ({i['tokens']} tokens{', truncated' if i['truncated'] else ''})"
                for i in preview["included"]]
        cut = [f"- {i['kind']}: {i['label']} ({i['tokens']} tokens)" for i in preview["cut"]]
        notes = [f"- {n}" for n in preview["notes"]]
        fence = "~~~~"  # the prompt itself contains ``` fences
        return Markdown(
            f"**Prompt for {loaded.spec.name}: {preview['tokens']} tokens** (window {preview['window']}, "
            f"{preview['max_new_tokens']} kept for the answer)\n\n{fence}text\n{preview['text']}\n{fence}\n\n"
            + ("**Context included**\n" + "\n".join(rows) + "\n\n" if rows else "")
            + ("**Cut to fit**\n" + "\n".join(cut) + "\n\n" if cut else "")
            + ("**Notes**\n" + "\n".join(notes) if notes else "")
        )

    def _chat_builder(self, messages: list[dict], context, max_new: int) -> Callable:
        """The prompt builder of a chat request; the kernel's namespace redacts it even without context."""
        namespace = context.namespace if context is not None else user_variables(self.shell)

        def build(loaded):
            from .prompts import build_chat_prompt

            return build_chat_prompt(loaded.tokenizer, loaded.spec, messages, context=context,
                                     namespace=namespace, max_new_tokens=max_new)

        return build

    def _stream(self, kind: str, build: Callable, *, max_new_tokens: int, temperature: float,
                meta: dict, show: bool = True):
        """Run a job, showing its text as it arrives; None when the user interrupted it."""
        cfg = self.settings
        pieces: list[str] = []
        job = self.engine.submit(kind, build, on_chunk=pieces.append, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_p=cfg.top_p, max_time=cfg.max_time)
        view = None
        try:  # from here on a Ctrl-C must cancel the job, wherever it lands
            view = _StreamView(self.shell) if show else None
            while True:
                try:
                    result = job.wait(0.05)
                    break
                except TimeoutError:
                    if view is not None:
                        view.update("".join(pieces))
        except KeyboardInterrupt:
            job.cancel()
            try:
                result = job.wait(30)
            except TimeoutError:
                result = None
            text = result.text if result is not None else "".join(pieces)
            if view is not None:
                view.finish(text, "generation interrupted")
            print("Generation interrupted: nothing was inserted; the kernel is fine.")
            return None
        status = self.engine.status()
        if result.stop_reason == "error":
            if view is not None:
                view.finish("", f"error: {result.error}")
            raise UsageError(result.error or "Generation failed.")
        metadata = {"jupyter_codellama": {
            **meta, "model": status.get("model"), "max_new_tokens": max_new_tokens,
            "temperature": temperature, **result.to_dict()}}
        if view is not None:
            view.finish(result.text, _footer(result, status.get("model", "?")), metadata)
        return result

    def _ensure_model(self, model: str | None) -> None:
        status = self.engine.status()
        if model:
            from .models import UnknownModelError, resolve_model

            try:
                spec = resolve_model(model)
            except UnknownModelError as exc:
                raise UsageError(str(exc)) from None
            if status["state"] == "ready" and status.get("repo_id") == spec.repo_id:
                return
            self._load_with_progress(model)
        elif status["state"] in ("unloaded", "error", "loading"):
            self._load_with_progress(None, already_loading=status["state"] == "loading")

    def _load_with_progress(self, model: str | None, *, already_loading: bool = False, **options: Any) -> None:
        from .engine.loading import ModelLoadError

        try:
            handle = None if already_loading else self.engine.load(model, **options)
        except (TypeError, ValueError) as exc:
            raise UsageError(str(exc)) from None
        name = model or self.settings.model or "the default model"
        view = _ProgressView(self.shell, f"Loading {name} …")
        try:
            while True:
                status = self.engine.status()
                if handle is not None and handle.done or handle is None and status["state"] != "loading":
                    break
                view.update(status.get("progress"))
                time.sleep(0.1)
            if handle is not None:
                handle.wait()
        except KeyboardInterrupt:
            view.close("Still loading in the background: see %codellama status.", ok=False)
            return
        except (ModelLoadError, ValueError) as exc:
            view.close("Loading failed.", ok=False)
            raise UsageError(str(exc)) from None
        status = self.engine.status()
        if status["state"] != "ready":
            view.close("Loading failed.", ok=False)
            raise UsageError(status.get("error") or "The model did not load.")
        memory = ", ".join(f"{k} {v}" for k, v in status.get("memory", {}).items())
        where = (f"served by {status['endpoint']}" if status.get("backend") == "remote"
                 else f"{status['quantization']}, {status['device']}; {memory}")
        view.close(f"{status['model']} ready ({where}) in {status.get('load_seconds', 0):.1f} s", ok=True)
        for warning in status.get("warnings", []):
            print("Note:", warning)

    def _context(self, mode: str):
        if mode == "none":
            return None
        from .prompts import ContextSettings, NotebookContext

        namespace = user_variables(self.shell)
        cells = self._history_cells(namespace)
        if mode == "cell":
            # The namespace still redacts its secrets' values; only the summaries are left out.
            return NotebookContext(cells=cells[-1:], current=None, namespace=namespace,
                                   settings=ContextSettings(include_variables=False))
        return NotebookContext(cells=cells, current=None, namespace=namespace)

    def _history_cells(self, namespace: dict) -> list[dict]:
        """Executed cells (not the current one, not our own magics) with outputs and errors."""
        from .prompts.redact import Redactor

        raw = self.shell.history_manager.input_hist_raw
        outputs = self.shell.user_ns.get("Out", {})
        errors = get_session().errors
        redact = Redactor(namespace=namespace)
        cells = []
        for n in range(1, len(raw) - 1):
            source = raw[n]
            if not source.strip() or is_assistant_cell(source):
                continue
            outs: list[dict] = []
            if n in outputs:
                text = _bounded_repr(outputs[n], redact)
                outs.append({"output_type": "execute_result", "data": {"text/plain": text}})
            if n in errors:
                e = errors[n]
                outs.append({"output_type": "error", "ename": e.ename, "evalue": e.evalue,
                             "traceback": e.traceback.splitlines()})
            cells.append({"cell_type": "code", "source": source, "outputs": outs, "execution_count": n})
        return cells

    def _cell_number(self, ref: str) -> int:
        m = _CELL_REF.match(ref.strip())
        if not m:
            raise UsageError(f"Cannot read cell reference {ref!r}: use In[5] or 5.")
        return int(m.group(1) or m.group(2))

    def _cell_source(self, ref: str | None) -> tuple[int, str]:
        raw = self.shell.history_manager.input_hist_raw
        if ref is not None:
            n = self._cell_number(ref)
            if not 0 < n < len(raw) - 1 or not raw[n].strip():
                raise UsageError(f"There is no executed cell In[{n}] in this kernel session.")
            return n, raw[n]
        for n in range(len(raw) - 2, 0, -1):
            if raw[n].strip() and not is_assistant_cell(raw[n]):
                return n, raw[n]
        raise UsageError("No earlier cell to work on: run a cell first, or name one (In[n]).")

    def _interpolate(self, request: str) -> str:
        from .prompts import interpolate

        errors = {n: e.describe() for n, e in get_session().errors.items()}
        result = interpolate(request, self.shell.user_ns, errors=errors)  # In/Out live here too
        if result.substituted or result.left_as_is:
            print(result.summary())
        return result.text

    def _insert(self, code: str, where: str) -> None:
        if where == "none" or not code.strip():
            return
        self.shell.set_next_input(code, replace=(where == "replace"))

    def _positive(self, value: int | None, default: int, name: str) -> int:
        value = default if value is None else value
        if value < 1:
            raise UsageError(f"{name} must be at least 1, got {value}.")
        return value

    def _temperature(self, value: float | None) -> float:
        value = self.settings.temperature if value is None else value
        if not 0 <= value <= 2:
            raise UsageError(f"--temperature must be between 0 and 2, got {value}.")
        return value

    @staticmethod
    def _no_args(command: str, rest: list[str]) -> None:
        if rest:
            raise UsageError(f"%codellama {command} takes no arguments (got {' '.join(rest)!r}).")


def _bounded_repr(value: Any, redact: Callable[[str], str], limit: int = 2000) -> str:
    """The output's repr, redacted before it is cut (a cut would hide a secret's closing quote)."""
    from .prompts.redact import clip

    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not break the prompt
        text = f"<{type(value).__name__}: repr failed: {exc}>"
    return clip(text, limit, redact)


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        value = ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")
