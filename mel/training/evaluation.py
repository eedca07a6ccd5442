"""Recall on a held-out set during training: R@1 and R@10 through the index search API.

R@K is the share of gold mentions whose gold QID is among the top K distinct
QIDs (docs/method.md); a mention whose gold entity is not in the KB counts as a
miss (the share that is in it is reported as the upper bound). The full
evaluation (`mel eval`) lives elsewhere; this is the per-round check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from mel.indexes.searcher import Index
from mel.errors import InputError
from mel.kb import training_mentions_from_documents
from mel.mentions import MentionSpan, MentionTokenizer
from mel.mewsli import iter_documents, mewsli_languages
from mel.records import qid_to_int
from mel.streams import SkipReport
from mel.training.kb_store import pad_rows
from mel.training.settings import EvalSpec

KS = (1, 10)


@dataclass
class EvalSet:
    """Held-out mentions, tokenised once (the tokenizer does not change)."""

    name: str
    tokens: np.ndarray
    lengths: np.ndarray
    gold: np.ndarray  # int64 QIDs
    langs: list[str]
    report: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.gold)


def read_eval_set(spec: EvalSpec, tokens: MentionTokenizer, report: SkipReport | None = None) -> EvalSet:
    report = report if report is not None else SkipReport()
    spans, gold, langs = [], [], []
    if spec.kind == "mewsli9":
        folder = Path(spec.path)
        if (folder / "mentions.tsv").is_file():  # one language folder of the dataset
            root, languages = folder.parent, [folder.name]
        else:
            root, languages = folder, mewsli_languages(folder)
        for lang in languages:
            for document in iter_documents(root, lang, report=report):
                for mention in document.mentions:
                    if mention.problem is not None:
                        report.skip(f"{root}/{lang}/mentions.tsv:{mention.row}", mention.problem)
                        continue
                    spans.append(MentionSpan(document.text, mention.position, mention.end))
                    gold.append(qid_to_int(mention.qid))
                    langs.append(lang)
    else:
        if not Path(spec.path).is_file():
            raise InputError(f"--eval {spec}: file not found")
        for mention in training_mentions_from_documents(spec.path, report=report):
            spans.append(MentionSpan(mention.text, mention.start, mention.end))
            gold.append(qid_to_int(mention.qid))
            langs.append(mention.lang or "")
    if not spans:
        raise InputError(f"--eval {spec}: no mentions with a gold QID")
    table, lengths = pad_rows(tokens.mentions(spans), tokens.max_length, tokens.pad_id)
    return EvalSet(str(spec), table, lengths, np.array(gold, dtype=np.int64), langs, report)


def recall_at_k(index: Index, queries: np.ndarray, gold: np.ndarray, ks: Sequence[int] = KS,
                langs: Sequence[str] | None = None) -> dict:
    """{"mentions", "r@1", "r@10", "in_kb", "by_language": {lang: {...}}} (shares in [0, 1])."""
    gold = np.asarray(gold, dtype=np.int64)
    result = index.search(queries, k=max(ks))
    ranks = np.where(result.qids == gold[:, None], np.arange(result.qids.shape[1])[None, :], np.iinfo(np.int64).max)
    first = ranks.min(axis=1)  # rank of the gold QID, or max when absent
    in_kb = index.contains(gold)

    def shares(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        out = {"mentions": n}
        for k in ks:
            out[f"r@{k}"] = round(float((first[mask] < k).mean()), 6) if n else 0.0
        out["in_kb"] = round(float(in_kb[mask].mean()), 6) if n else 0.0
        return out

    overall = shares(np.ones(len(gold), dtype=bool))
    if langs is not None and len(set(langs)) > 1:
        lang_array = np.array(langs)
        overall["by_language"] = {lang: shares(lang_array == lang) for lang in sorted(set(langs))}
    return overall
