"""Mention windows: the mention in the middle, extended where the text ends, any length of document."""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer

from mel.encoding import Encoder
from mel.mentions import MentionSpan, MentionTokenizer
from mel.models import ModelFolder


def tokens_for(tiny_model, max_length=16):
    folder = ModelFolder.open(tiny_model)
    tokenizer = Tokenizer.from_file(str(tiny_model / "tokenizer.json"))
    return MentionTokenizer(tokenizer, folder.manifest, max_length=max_length), tokenizer


def decode(tokenizer, ids):
    return [tokenizer.id_to_token(i) for i in ids]


def test_mention_is_centred_between_markers(tiny_model):
    tokens, tok = tokens_for(tiny_model, max_length=12)
    text = "a b c d e f g paris h i j k l m"
    start = text.index("paris")
    ids = tokens.mentions([MentionSpan(text, start, start + 5)])[0]
    assert len(ids) == 12
    assert decode(tok, ids) == ["[CLS]", "e", "f", "g", "[M]", "paris", "[M]", "h", "i", "j", "k", "[SEP]"]


def test_window_extends_to_the_other_side_at_text_edges(tiny_model):
    tokens, tok = tokens_for(tiny_model, max_length=12)
    text = "paris a b c d e f g h i j"
    ids = tokens.mentions([MentionSpan(text, 0, 5)])[0]
    assert decode(tok, ids) == ["[CLS]", "[M]", "paris", "[M]", "a", "b", "c", "d", "e", "f", "g", "[SEP]"]
    text = "a b c d e f g h i j paris"
    ids = tokens.mentions([MentionSpan(text, len(text) - 5, len(text))])[0]
    assert decode(tok, ids) == ["[CLS]", "d", "e", "f", "g", "h", "i", "j", "[M]", "paris", "[M]", "[SEP]"]


def test_short_text_is_not_padded_and_long_mention_is_truncated(tiny_model):
    tokens, tok = tokens_for(tiny_model, max_length=12)
    assert decode(tok, tokens.mentions([MentionSpan("the paris", 4, 9)])[0]) == \
        ["[CLS]", "the", "[M]", "paris", "[M]", "[SEP]"]
    long_mention = " ".join(["city"] * 40)
    ids = tokens.mentions([MentionSpan(f"a {long_mention} b", 2, 2 + len(long_mention))])[0]
    assert len(ids) <= 12 and ids.count(tokens.marker_id) == 2


def test_very_long_document_costs_one_window(tiny_model):
    tokens, tok = tokens_for(tiny_model, max_length=16)
    text = "the city " * 200_000 + "paris" + " the river" * 200_000
    start = text.index("paris")
    ids = tokens.mentions([MentionSpan(text, start, start + 5)])[0]
    assert len(ids) == 16
    assert decode(tok, ids)[6:9] == ["[M]", "paris", "[M]"]  # 5 tokens before, 6 after


def test_entity_is_marker_label_marker_description(tiny_model):
    tokens, tok = tokens_for(tiny_model, max_length=10)
    ids = tokens.entities(["paris"], ["capital of france and the city of the river"])[0]
    assert decode(tok, ids) == ["[CLS]", "[M]", "paris", "[M]", "capital", "of", "france", "and", "the", "[SEP]"]


def test_strings_have_no_markers(tiny_model):
    tokens, tok = tokens_for(tiny_model)
    assert decode(tok, tokens.strings(["paris city"])[0]) == ["[CLS]", "paris", "city", "[SEP]"]


def test_encoder_returns_input_order_whatever_the_batching(tiny_model):
    texts = ["paris", "the city of the river and the king", "rome", "a b c d e f g h i j k", "italy"] * 7
    small = Encoder(ModelFolder.open(tiny_model), precision="fp32", batch_size=3).encode_texts(texts)
    single = np.concatenate([Encoder(ModelFolder.open(tiny_model), precision="fp32", batch_size=64)
                             .encode_texts([t]) for t in texts[:5]])
    assert np.allclose(small[:5], single, atol=1e-5)
    assert np.allclose(small[5:10], single, atol=1e-5)
