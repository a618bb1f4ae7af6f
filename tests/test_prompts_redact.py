"""Redaction: every deny-listed name, form and token shape; linear time; bounded memory."""
from __future__ import annotations

import gc
import time
import tracemalloc

import pytest

from jupyter_codellama.prompts.redact import REDACTED, Redactor, is_denied

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
    ('os.environ.setdefault("OPENAI_API_KEY", "Hunter2Hunter2")', "Hunter2Hunter2"),
    ('r = requests.get(url, auth=("me", "Hunter2Hunter2"))', "Hunter2Hunter2"),
    ('headers = {"Authorization": "Bearer Hunter2Hunter2xyz"}', "Hunter2Hunter2xyz"),
    ("curl -H 'X-Trace: 1' -H 'Accept: */*' # Authorization: Bearer Hunter2Hunter2xyz", "Hunter2Hunter2xyz"),
    # token shapes, under names that are not deny-listed
    ('s3 = boto3.client("s3", "us-east-1", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")',
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("session id ASIAIOSFODNN7EXAMPLE expired", "ASIAIOSFODNN7EXAMPLE"),
    ("jwt = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9P'",
     "eyJzdWIiOiIxMjM0NTY3ODkwIn0"),
    ("stripe.api = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "4eC39HqLyjWDarjtT1zdp7dc"),
    ("gl = Gitlab(url, 'glpat-Hunter2Hunter2Hunter2x')", "Hunter2Hunter2Hunter2x"),
    ('pem = """-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAHunter2\nHunter2Hunter2==\n-----END RSA PRIVATE KEY-----"""',
     "Hunter2"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAHunter2 (output cut here)", "Hunter2"),
]


@pytest.mark.parametrize("text, secret", LEAKS, ids=[text[:40] for text, _ in LEAKS])
def test_deny_listed_names_forms_and_token_shapes_are_redacted(text, secret):
    redacted = Redactor()(text)
    assert secret not in redacted
    assert REDACTED in redacted


@pytest.mark.parametrize("text", [
    "passengers = df['pclass']",
    "author = 'Ada Lovelace'",
    "max_tokens == 100",
    "KeyError: 'password'",
    "commit 0123456789abcdef0123456789abcdef01234567",  # a git SHA is not an AWS secret
    "token=tokenizer(text)",  # a call, not a value
    "url = 'https://example.com/data.csv'",
])
def test_ordinary_code_is_left_alone(text):
    assert Redactor()(text) == text


def test_deny_list_names():
    for name in ("db_pass", "passwd", "pwd", "auth_header", "credentials", "Authorization", "api_key"):
        assert is_denied(name), name
    for name in ("passengers", "author", "compass_heading", "df"):
        assert not is_denied(name), name


@pytest.mark.parametrize("cell", [
    "token_" + "x" * 100_000,  # one word run: the literal regex was quadratic in it
    'api_key = "' + "\\" * 100_000,  # an unterminated literal of backslashes: exponential
    "x: " + " " * 100_000,  # an annotation of spaces
    "'" + "a" * 199 + "'" * 100_000,
    "eyJ" + "a" * 100_000,
    "://" + ":" * 100_000,
    "%env API_KEY " + " x" * 50_000,
    "-----BEGIN PRIVATE KEY-----" * 4_000,
    ("aZ9/" * 10 + " ") * 2_000,
])
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
            redact(f"cell_{i} = 1\n" + "y = x + 1\n" * 100_000)  # 1 MB, different every time
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert retained < 40 * 2**20, f"{retained / 2**20:.0f} MiB kept after redacting 80 MiB of cells"
