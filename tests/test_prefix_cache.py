"""The prefix cache's bookkeeping, on synthetic KV tensors (no model needed)."""

import torch
from transformers import DynamicCache

from jupyter_codellama.engine.generation import PrefixCache, cache_nbytes, cache_seq_length


def kv(n_tokens: int, layers: int = 2) -> DynamicCache:
    cache = DynamicCache()
    for layer in range(layers):
        t = torch.arange(n_tokens, dtype=torch.float32).reshape(1, 1, n_tokens, 1).expand(1, 2, n_tokens, 8)
        cache.update(t.clone(), t.clone(), layer)
    return cache


def test_longest_common_prefix_is_reused_and_at_least_one_token_is_left_to_compute():
    pc = PrefixCache(max_bytes=10**9)
    pc.store(list(range(10)), kv(10))
    cache, n = pc.lookup(list(range(10)))
    assert n == 9 and cache_seq_length(cache) == 9
    pc.store(list(range(10)), kv(10))
    cache, n = pc.lookup([0, 1, 2, 3, 99, 100])
    assert n == 4 and cache_seq_length(cache) == 4


def test_partial_match_leaves_the_stored_entry_intact_for_other_prompts():
    pc = PrefixCache(max_bytes=10**9)
    pc.store(list(range(10)), kv(10))
    pc.lookup([0, 1, 2, 50])
    cache, n = pc.lookup(list(range(10)) + [11])
    assert n == 10 and cache_seq_length(cache) == 10


def test_nothing_in_common_is_a_miss():
    pc = PrefixCache(max_bytes=10**9)
    pc.store([1, 2, 3], kv(3))
    assert pc.lookup([7, 8, 9]) == (None, 0)
    assert pc.misses == 1


def test_memory_bound_evicts_least_recently_used_entries():
    one = cache_nbytes(kv(100))
    pc = PrefixCache(max_bytes=int(2.5 * one))
    for start in (1000, 2000, 3000):
        pc.store(list(range(start, start + 100)), kv(100))
    assert len(pc) == 2 and pc.nbytes <= 2.5 * one
    assert pc.lookup(list(range(1000, 1050)))[0] is None, "the oldest entry was evicted"
    assert pc.lookup(list(range(3000, 3050)))[1] == 49


def test_an_entry_extended_by_a_new_prompt_is_replaced_not_duplicated():
    pc = PrefixCache(max_bytes=10**9)
    pc.store(list(range(10)), kv(10))
    pc.store(list(range(20)), kv(20))
    assert len(pc) == 1


def test_a_cache_larger_than_the_budget_or_mismatched_is_not_stored():
    pc = PrefixCache(max_bytes=10)
    pc.store(list(range(10)), kv(10))
    assert len(pc) == 0
    pc = PrefixCache(max_bytes=10**9)
    pc.store(list(range(5)), kv(10))  # ids and cache disagree
    assert len(pc) == 0


def test_a_match_short_of_only_a_few_tokens_is_taken_without_a_copy():
    # Inline completion: the stored prompt + suggestion, then the next keystroke's prompt.
    pc = PrefixCache(max_bytes=10**9)
    stored = kv(100)
    pc.store(list(range(100)), stored)
    cache, n = pc.lookup(list(range(90)) + [999, 1000])
    assert n == 90 and cache_seq_length(cache) == 90
    assert cache is stored and len(pc) == 0, "taken and cropped, not deep-copied"
    assert torch.equal(cache.layers[0].keys[0, 0, :, 0], torch.arange(90, dtype=torch.float32))
