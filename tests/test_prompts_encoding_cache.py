"""The token-count cache: counts are remembered, the texts are not."""

import gc
import tracemalloc

from jupyter_codellama.prompts.encoding import PromptEncoder


def test_counting_many_large_cells_keeps_no_copy_of_them(embedded_tokenizer):
    encoder = PromptEncoder(embedded_tokenizer)
    cells = 30
    cell_bytes = len("x = 1\n" * 20_000)
    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(cells):
            # Each keystroke in a large cell is a new text of the same size.
            encoder.count(f"# keystroke {i}\n" + "x = 1\n" * 20_000)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < cell_bytes * 2, f"the cache holds {held:,} bytes after {cells} cells of {cell_bytes:,}"


def test_an_unchanged_cell_is_counted_once(embedded_tokenizer, monkeypatch):
    encoder = PromptEncoder(embedded_tokenizer)
    calls = []
    encode = encoder.encode
    monkeypatch.setattr(encoder, "encode", lambda text: calls.append(text) or encode(text))
    text = "import pandas as pd\ndf = pd.read_csv('data.csv')\n"
    first = encoder.count(text)
    assert encoder.count(str(text)) == first == len(encode(text))
    assert len(calls) == 1


def test_the_cache_forgets_the_oldest_counts_beyond_its_budget(embedded_tokenizer):
    encoder = PromptEncoder(embedded_tokenizer, count_cache_bytes=4096)
    for i in range(1000):
        encoder.count(f"value_{i} = {i}")
    assert 0 < len(encoder._counts) < 1000
    assert encoder._counts.bytes <= 4096
