"""Streaming text: stop strings and incremental detokenisation (fast, no model weights)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_codellama.engine.generation import IncrementalDetokenizer, StopMatcher


def stream(matcher: StopMatcher, deltas):
    out, hit = [], False
    for d in deltas:
        safe, hit = matcher.feed(d)
        out.append(safe)
        if hit:
            break
    if not hit:
        out.append(matcher.finish())
    return "".join(out), hit


def test_stop_string_split_across_deltas_is_never_shown():
    text, hit = stream(StopMatcher(["\n\n"]), ["x = 1", "\n", "\nprint(x)"])
    assert (text, hit) == ("x = 1", True)


def test_text_that_only_looks_like_a_stop_prefix_is_released_at_the_end():
    text, hit = stream(StopMatcher(["```\n"]), ["a = 1\n", "``"])
    assert (text, hit) == ("a = 1\n``", False)


def test_earliest_of_several_stop_strings_wins():
    text, hit = stream(StopMatcher(["\ndef ", "\nclass "]), ["x\nclass A:\ndef f"])
    assert (text, hit) == ("x", True)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab\n", max_size=40),
    st.lists(st.integers(1, 5), max_size=20),
    st.sampled_from(["\n\n", "ab", "ba\n"]),
)
def test_streamed_text_equals_text_before_first_stop(text, cuts, stop):
    deltas, i = [], 0
    for c in cuts:
        deltas.append(text[i : i + c])
        i += c
    deltas.append(text[i:])
    got, hit = stream(StopMatcher([stop]), deltas)
    index = text.find(stop)
    assert got == (text[:index] if index >= 0 else text)
    assert hit == (index >= 0)


SAMPLES = [
    "def naïve(x):\n    return '東京 🚀' + x  # café\n",
    "    indented\n\ttabbed\n\n  spaces  \n",
    "emoji 👩‍💻 and math ∑ᵢ xᵢ²",
]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["embedded_tokenizer", "codellama_tokenizer"])
@pytest.mark.parametrize("sample", SAMPLES)
def test_incremental_detokenisation_reassembles_the_exact_text(request, which, sample):
    tok = request.getfixturevalue(which)
    context = tok("x = 1\n", add_special_tokens=False)["input_ids"]
    ids = tok(sample, add_special_tokens=False)["input_ids"]
    detok = IncrementalDetokenizer(tok, context)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    expected = tok.decode(context + ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert (
        "".join(deltas)
        == expected[len(tok.decode(context, skip_special_tokens=True, clean_up_tokenization_spaces=False)) :]
    )
    assert not any("\ufffd" in d for d in deltas), "a partial character was streamed"


def test_token_healing_steers_the_first_tokens_through_the_lead_and_hides_it(embedded_tokenizer):
    import torch

    from jupyter_codellama.engine.generation import LeadHealer, token_texts

    tok = embedded_tokenizer
    texts = token_texts(tok)
    healer = LeadHealer(tok, "\n    ")
    logits = torch.zeros(len(tok))
    allowed = torch.isfinite(healer.mask(logits)).nonzero().flatten().tolist()
    assert allowed, "some token must continue the lead"
    for i in allowed:
        t = texts[i]
        assert "\n    ".startswith(t) or t.startswith("\n    "), repr(t)
    newline = tok.convert_tokens_to_ids("Ċ")
    assert newline in allowed
    assert tok.convert_tokens_to_ids("return") not in allowed  # no word before the line break

    # The shown text starts after the lead, whatever way the tokens split it.
    healer.advance(newline)
    assert healer.steering
    assert healer.strip("\n") == "" and healer.strip("   ") == "" and healer.strip(" return x") == "return x"
    assert healer.strip("\n") == "\n"  # past the lead, nothing is hidden
    # A model that dedents (allowed when the stop ids end the lead early) shows what it wrote.
    dedent = LeadHealer(tok, "\n    ")
    assert dedent.strip("\nprint(x)") == "print(x)"
