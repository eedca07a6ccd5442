"""Personal pronouns marked as mentions: which strings are pronouns, and which mention each stands for."""

from __future__ import annotations

import re

from mel.mentions import MentionSpan
from mel.pronouns import antecedents, is_pronoun


def spans_of(text: str, *surfaces: str, lang: str | None = "en", doc: int | None = 0) -> list[MentionSpan]:
    out, at = [], 0
    for surface in surfaces:
        start = re.compile(rf"\b{re.escape(surface)}\b").search(text, at).start()
        out.append(MentionSpan(text, start, start + len(surface), lang, doc))
        at = start + len(surface)
    return out


def test_pronouns_by_language_and_case():
    assert is_pronoun("he", "en") and is_pronoun("He", "en") and is_pronoun("her ", "en")
    assert not is_pronoun("HE", "en")  # all capitals may be an acronym
    assert not is_pronoun("he", None) and not is_pronoun("he", "ja")  # unknown or unlisted language
    assert is_pronoun("Er", "de") and is_pronoun("elle", "fr-CA") and is_pronoun("él", "es")
    assert not is_pronoun("Paris", "en") and not is_pronoun("il", "en")


def test_the_antecedent_is_the_passage_topic_not_the_nearest_name():
    text = "Rico Lebrun taught at the Chouinard Art Institute in Los Angeles. His students loved him."
    spans = spans_of(text, "Rico Lebrun", "Chouinard Art Institute", "Los Angeles", "His", "him")
    assert antecedents(spans) == [-1, -1, -1, 0, 0]


def test_no_antecedent_far_back_after_the_pronoun_or_lower_case_or_in_another_document():
    far = "Ada Lovelace wrote notes. Babbage read them. Many did too. Then he smiled."
    assert antecedents(spans_of(far, "Ada Lovelace", "he")) == [-1, -1]  # three sentences back
    near = "Ada Lovelace wrote notes. Babbage read them. Then he smiled."
    assert antecedents(spans_of(near, "Ada Lovelace", "Babbage", "he")) == [-1, -1, 0]
    after = "He said that Ada Lovelace wrote notes."
    assert antecedents(spans_of(after, "He", "Ada Lovelace")) == [-1, -1]
    lower = "The professor wrote notes and she smiled."
    assert antecedents(spans_of(lower, "professor", "she")) == [-1, -1]
    apart = spans_of("Ada Lovelace wrote.", "Ada Lovelace", doc=0) + spans_of("She smiled.", "She", doc=1)
    assert antecedents(apart) == [-1, -1]
    alone = spans_of("Ada Lovelace wrote and she smiled.", "Ada Lovelace", "she", doc=None)
    assert antecedents(alone) == [-1, -1]


def test_a_pronoun_never_stands_for_another_pronoun():
    text = "She met Alan Turing, and her notes were read by him."
    spans = spans_of(text, "She", "Alan Turing", "her", "him")
    assert antecedents(spans) == [-1, -1, 1, 1]


def test_a_span_that_starts_inside_a_sentence_break_still_counts_that_break():
    text = "Ada Lovelace wrote notes. Babbage read them. Many did too.  he smiled."
    start = text.index("  he") + 1  # the span " he" begins in the whitespace after "too."
    spans = [MentionSpan(text, 0, 12, "en", 0), MentionSpan(text, start, start + 3, "en", 0)]
    assert antecedents(spans) == [-1, -1]  # "Ada Lovelace" is three sentences back
