"""Redaction: every deny-listed name, form and token shape; linear time; bounded memory."""

from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from jupyter_codellama.models import resolve_model
from jupyter_codellama.prompts import (
    NotebookContext,
    approximate_tokens,
    build_chat_prompt,
    build_context,
    build_infill_prompt,
    interpolate,
)
from jupyter_codellama.prompts.redact import REDACTED, Redactor, is_denied, redaction_cache_bytes

# Each case: (text as it appears in a cell or an output, the secret that must not survive).
# The surrounding names are not deny-listed unless the case is about the name itself.
LEAKS = [
    # names
    ('db_pass = "Hunter2Hunter2"', "Hunter2Hunter2"),
    ('passwd = "Hunter2Hunter2"', "Hunter2Hunter2"),
    ('pwd = "Hunter2Hunter2"', "Hunter2Hunter2"),
    ('DATABASE_URL = "postgresql://admin:Hunter2Hunter2@db.example.com:5432/app"', "Hunter2Hunter2"),
    ('auth_header = "Basic dXNlcjpodW50ZXIy"', "dXNlcjpodW50ZXIy"),
    ('credentials = "user:Hunter2Hunter2"', "Hunter2Hunter2"),
    # forms
    ("%env OPENAI_API_KEY=Hunter2Hunter2", "Hunter2Hunter2"),
    ("%env OPENAI_API_KEY Hunter2Hunter2", "Hunter2Hunter2"),
    ("API_KEY=Hunter2Hunter2", "Hunter2Hunter2"),
    ("export SERVICE_TOKEN=Hunter2Hunter2  # from the vault", "Hunter2Hunter2"),
    ("!export hf_token=Hunter2Hunter2", "Hunter2Hunter2"),
    ('os.environ.setdefault("OPENAI_API_KEY", "Hunter2Hunter2")', "Hunter2Hunter2"),
    ('r = requests.get(url, auth=("me", "Hunter2Hunter2"))', "Hunter2Hunter2"),
    ('headers = {"Authorization": "Bearer Hunter2Hunter2xyz"}', "Hunter2Hunter2xyz"),
    ("curl -H 'X-Trace: 1' -H 'Accept: */*' # Authorization: Bearer Hunter2Hunter2xyz", "Hunter2Hunter2xyz"),
    # token shapes, under names that are not deny-listed
    (
        's3 = boto3.client("s3", "us-east-1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")',
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("session id ASIAIOSFODNN7EXAMPLE expired", "ASIAIOSFODNN7EXAMPLE"),
    (
        "jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P'",
        "eyJzdWIiOiIxMjM0NTY3ODkwIn0",
    ),
    ("stripe.api = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("gl = Gitlab(url, 'glpat-Hunter2Hunter2Hunter2x')", "Hunter2Hunter2Hunter2x"),
    (
        'pem = """-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAHunter2\nHunter2Hunter2==\n'
        '-----END RSA PRIVATE KEY-----"""',
        "Hunter2",
    ),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAHunter2 (output cut here)", "Hunter2"),
]


@pytest.mark.parametrize("text, secret", LEAKS, ids=[text[:40] for text, _ in LEAKS])
def test_deny_listed_names_forms_and_token_shapes_are_redacted(text, secret):
    redacted = Redactor()(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize(
    "text",
    [
        "passengers = df['pclass']",
        "author = 'Ada Lovelace'",
        "max_tokens == 100",
        "KeyError: 'password'",
        "commit 0123456789abcdef0123456789abcdef01234567",  # a git SHA is not an AWS secret
        "token=tokenizer(text)",  # a call, not a value
        "out = model.generate(\n    ids,\n    max_new_tokens=max_new_tokens,\n    max_tokens=256,\n)",
        "url = 'https://example.com/data.csv'",
    ],
)
def test_ordinary_code_is_left_alone(text):
    assert Redactor()(text) == text


def test_deny_list_names():
    for name in ("db_pass", "passwd", "pwd", "auth_header", "credentials", "Authorization", "api_key"):
        assert is_denied(name), name
    for name in ("passengers", "author", "compass_heading", "df"):
        assert not is_denied(name), name


@pytest.mark.parametrize(
    "cell",
    [
        "token_" + "x" * 100_000,  # one word run: the literal regex was quadratic in it
        'api_key = "' + "\\" * 100_000,  # an unterminated literal of backslashes: exponential
        "x: " + " " * 100_000,  # an annotation of spaces
        "'" + "a" * 199 + "'" * 100_000,
        "eyJ" + "a" * 100_000,
        "://" + ":" * 100_000,
        "%env API_KEY " + " x" * 50_000,
        "-----BEGIN PRIVATE KEY-----" * 4_000,
        ("aZ9/" * 10 + " ") * 2_000,
    ],
)
def test_pathological_cells_are_redacted_in_linear_time(cell):
    redact = Redactor(namespace={"api_key": "not-in-the-cell"})
    start = time.perf_counter()
    redact(cell + "\n")
    assert time.perf_counter() - start < 2.0


def test_the_cache_holds_a_bounded_number_of_bytes():
    """Redacting many distinct large cells (a megabyte cell edited key by key) keeps memory flat."""
    redact = Redactor(namespace={"api_key": "sk-very-secret-value"})
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(80):
            redact(f"cell_{i} = 1\n" + "y = x + 1\n" * 100_000)  # a large cell, different every time
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 40 * 2**20, f"{retained / 2**20:.0f} MiB kept after redacting 80 MiB of cells"
    assert redaction_cache_bytes() <= 32 * 2**20


# ---------------------------------------------------------------------------------------------
# Every path into a prompt, through the real prompt builders

KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
INSTRUCT = resolve_model("7b-instruct")


def leaks(prompt, tok) -> bool:
    return "Ab3dEf6hIj9k" in prompt.text or "Ab3dEf6hIj9k" in tok.decode(prompt.ids)


def chat(tok, content, **kwargs):
    return build_chat_prompt(tok, INSTRUCT, [{"role": "user", "content": content}], **kwargs)


def test_a_key_typed_into_a_chat_message_is_redacted(codellama_tokenizer):
    prompt = chat(codellama_tokenizer, f"Why does connect('{KEY}') fail?")
    assert not leaks(prompt, codellama_tokenizer) and "connect('<redacted>')" in prompt.text


def test_every_turn_and_the_system_prompt_are_redacted(codellama_tokenizer):
    messages = [
        {"role": "system", "content": f"The user's key is {KEY}."},
        {"role": "user", "content": "Make a client."},
        {"role": "assistant", "content": f"client = OpenAI(api_key='{KEY}')"},
        {"role": "user", "content": "Now stream."},
    ]
    assert not leaks(build_chat_prompt(codellama_tokenizer, INSTRUCT, messages), codellama_tokenizer)


def test_generate_from_comment_sends_the_cell_redacted(codellama_tokenizer):
    """The lab's "Generate Code from the Cell's Comment" quotes the cell in the message."""
    source = f"# list my models\nclient = OpenAI('{KEY}')"
    question = (
        "Write the Python code that the comment in the active cell asks for. Answer with one "
        f"code block that can replace the cell.\n\n```python\n{source}\n```"
    )
    context = NotebookContext(cells=[{"cell_type": "code", "source": source}], current=0)
    prompt = chat(codellama_tokenizer, question, context=context)
    assert not leaks(prompt, codellama_tokenizer) and "# list my models" in prompt.text


def test_fix_error_sends_the_error_line_and_traceback_redacted(codellama_tokenizer):
    """The lab's "Fix Error" puts the error's last line in the message, the traceback in the cell."""
    error = f"AuthenticationError: Incorrect API key provided: {KEY}"
    cell = {
        "cell_type": "code",
        "execution_count": 3,
        "source": "client.models.list()",
        "outputs": [
            {
                "output_type": "error",
                "ename": "AuthenticationError",
                "evalue": error,
                "traceback": ["Traceback (most recent call last)", error],
            }
        ],
    }
    question = f"The active cell raised `{error}`. Explain the cause briefly and give the corrected cell."
    prompt = chat(codellama_tokenizer, question, context=NotebookContext(cells=[cell], current=0))
    assert not leaks(prompt, codellama_tokenizer) and "Incorrect API key provided" in prompt.text


def test_a_quoted_selection_is_redacted(codellama_tokenizer):
    content = f"What does the selected code do?\n\nThe selected code:\n```\nheaders = auth('{KEY}')\n```"
    assert not leaks(chat(codellama_tokenizer, content), codellama_tokenizer)


def test_namespace_values_are_redacted_from_messages_without_a_context(codellama_tokenizer):
    """A getpass() value has no shape: only the namespace knows it is a secret."""
    namespace = {"db_password": "correct horse battery staple"}
    prompt = chat(codellama_tokenizer, "it printed correct horse battery staple, why?", namespace=namespace)
    assert "horse" not in prompt.text and "it printed <redacted>" in prompt.text


def test_infill_prompts_get_the_namespace_too(codellama_tokenizer):
    prompt = build_infill_prompt(
        codellama_tokenizer,
        resolve_model("7b"),
        "print('correct horse battery staple')\n",
        namespace={"db_password": "correct horse battery staple"},
    )
    assert "horse" not in prompt.text


# ---------------------------------------------------------------------------------------------
# Redact first, then cut

LONG_SECRET = "Sup3rS3cretPassw0rdValue!AndTheRest"


def test_a_cut_variable_summary_never_shows_the_start_of_a_secret():
    settings = {"host": "db.internal.example.com", "password": LONG_SECRET}  # the repr is cut in the value
    ctx = build_context(
        "settings", "", NotebookContext(namespace={"settings": settings}), budget=2000, count_tokens=approximate_tokens
    )
    assert "# settings: dict (len 2) = {'host': 'db.internal.example.com', 'password': '<redacted>'" in ctx.prefix
    assert "Sup3r" not in ctx.prefix


def test_a_cut_output_line_never_shows_the_start_of_a_secret():
    line = "connecting with " + "x" * 160 + f" password='{LONG_SECRET}' to the database"
    text = line + "".join(f"\nstep {i}: ok" for i in range(60))  # long output: long lines are cut
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "source": "connect()",
        "outputs": [{"output_type": "stream", "name": "stdout", "text": text}],
    }
    ctx = build_context("", "", NotebookContext(cells=[cell]), budget=2000, count_tokens=approximate_tokens)
    assert "connecting with" in ctx.prefix and "Sup3r" not in ctx.prefix


def test_an_interpolated_value_is_redacted_before_it_is_cut():
    note = "x" * 80 + f" password='{LONG_SECRET}' and more"
    assert "Sup3r" not in interpolate("{note}", {"note": note}, max_chars=100).text
    assert "Sup3r" not in interpolate("{cfg}", {"cfg": {"a": "y" * 380, "password": LONG_SECRET}}).text
