"""Recall on a held-out set after each round, through the one evaluator (`mel.evaluation`).

The model being trained is wrapped as a ranker: held-out mentions are tokenised
exactly as at inference, embedded with the torch model, and searched in the
round's index of the KB. The readers, the R@K tally and the rule for mentions
that cannot be linked (they count as misses) are `mel eval`'s own, so a round's
recall is what `mel eval` reports for the same model, set and index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mel.errors import InputError
from mel.evaluation import evaluate
from mel.gold import EvalDocument, EvalSpec, read_gold
from mel.indexes.searcher import Index
from mel.mentions import MentionSpan, MentionTokenizer
from mel.rankers import Ranking
from mel.skips import SkipReport
from mel.training.kb_store import pad_rows

KS = (1, 10)


@dataclass
class HeldOut:
    """The held-out documents, read once (they are small)."""

    name: str
    documents: list[EvalDocument]
    report: SkipReport = field(default_factory=SkipReport)


def read_held_out(spec: EvalSpec) -> HeldOut:
    report = SkipReport()
    documents = list(read_gold(spec, report))
    if not any(document.mentions for document in documents):
        raise InputError(f"--eval {spec}: no mentions with a gold QID{report.why()}")
    return HeldOut(str(spec), documents, report)


@dataclass
class TrainingRanker:
    """The model under training as a ranker (the `mel.rankers` protocol)."""

    tokens: MentionTokenizer
    embed: Callable[[np.ndarray, np.ndarray], np.ndarray]
    index: Index
    name: str = "biencoder (training)"
    notes: list[str] = field(default_factory=list)

    def prepare(self, spans: Sequence[MentionSpan]) -> tuple[np.ndarray, np.ndarray]:
        return pad_rows(self.tokens.mentions(spans), self.tokens.max_length, self.tokens.pad_id)

    def rank(self, prepared: tuple[np.ndarray, np.ndarray], k: int) -> Ranking:
        tokens, lengths = prepared
        if len(tokens) == 0:
            return Ranking.empty(0, k)
        result = self.index.search(self.embed(tokens, lengths.astype(np.int64)), k)
        return Ranking(result.qids, result.scores)

    def in_kb(self, gold: np.ndarray) -> np.ndarray:
        return self.index.contains(gold)

    def describe(self) -> dict:
        return {"index": {"path": str(self.index.folder)}}


def _shares(row: dict, upper: dict) -> dict:
    return {"mentions": row["mentions"], **{f"R@{k}": round(row[f"R@{k}"], 6) for k in KS},
            "in_kb": round(upper["share"], 6)}


def round_recall(held_out: HeldOut, ranker: TrainingRanker) -> dict:
    """{"mentions", "R@1", "R@10", "in_kb"[, "by_language": {lang: {...}}]} (shares in [0, 1])."""
    tally = evaluate(held_out.documents, ranker, KS).tally
    table, upper = tally.recall_table(), tally.upper_bound()
    out = _shares(table["micro"], upper["micro"])
    langs = [lang for lang in table if lang not in ("micro", "macro")]
    if len(langs) > 1:
        out["by_language"] = {lang: _shares(table[lang], upper[lang]) for lang in langs}
    return out
