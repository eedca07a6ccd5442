"""Fit the reranker that mel ships (mel/linker/default-reranker.json) and that untuned indexes use.

    python bench/fit_default_reranker.py [--work /tmp/mel-bench-linker]

Fitted on data whose licences let us ship what is learnt from it:
- OKE-2016 train (which contains OKE-2015 train): Wikipedia sentences, CC BY-SA 4.0;
- the HIPE-2022 dev documents of its CC BY 4.0 corpora (newseye, sonar, ajmc), multilingual;
- mel's own sample (examples/mewsli9-sample with examples/kb.jsonl), Apache-2.0,
  which has descriptions (the context view).
The sets come from ../shared/data/el-dev (not in the repo); without them the script says so
and stops. The dev sets have no training links, so half of the rows simulate an alias table:
for each fifth of the documents, a table counted from the gold mentions of the other four.
Each set weighs the same in the trees and the calibration (HIPE-2022 has four times OKE's
mentions: unweighted, the reranker learns the historical newspapers and little else), and one
Platt scaling serves every language: here each language comes from other sources (English
from Wikipedia sentences, German and Finnish from newspapers), and a per-language fit learned
the source (the English one made the English dev sets' probabilities 0.1 to 0.15 too high).
The file keeps a sketch of its gold mentions' fingerprints (mel.link_sketch), so that `mel eval`
on these sets says its figures are in-sample.
The fit reproduces the shipped file (all but `created`) only with the tools that made it: the
candidate rows' scores come from the int8 default model, which onnxruntime quantises when it is
first built, and scikit-learn grows the trees. Elsewhere (onnxruntime 1.32.0, scikit-learn 1.9.1
on a fresh machine) it grows other trees; mel ships the one file.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import linker_data  # noqa: E402

FIT_ON = {
    "elevant-oke-2016-train": "OKE-2016 train (Wikipedia sentences, CC BY-SA 4.0; includes OKE-2015 train)",
    "hipe2022-dev": "HIPE-2022 dev, corpora newseye, sonar and ajmc only (CC BY 4.0)",
    "sample": "mel's own sample, examples/mewsli9-sample (Apache-2.0)",
}
CC_BY_HIPE = ("hipe2022-dev-newseye", "hipe2022-dev-sonar", "hipe2022-dev-ajmc")
FOLDS = 5


def documents(name: str):
    from mel.gold import gold_documents
    from mel.skips import SkipReport

    docs = gold_documents(str(linker_data.gold_path(name)), SkipReport())
    if name == "hipe2022-dev":  # the reader yields the documents with gold mentions, in file order
        docs = [d for d, doc_id in zip(docs, _hipe_ids(), strict=True) if doc_id.startswith(CC_BY_HIPE)]
    return docs


def _hipe_ids() -> list[str]:
    import json

    ids = []
    for line in linker_data.gold_path("hipe2022-dev").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if any(m.get("qid") for m in record.get("mentions", [])):
            ids.append(record["id"])
    return ids


def rows_for(name: str, index: Path, work: Path):
    """Rows without links, and rows with an alias table simulated from the other folds' gold
    (cached in the work folder, as rows-NAME.npz, next to the index they come from; used again
    only while the code (mel's and the benches'), the index and the gold are the ones they were
    computed from: linker_data.rows_key)."""
    import numpy as np

    from mel.fitting import TrainingRows

    cache = work / f"rows-{name}.npz"
    key = linker_data.rows_key(index, linker_data.gold_path(name))
    if cache.is_file():
        data = np.load(cache, allow_pickle=False)
        if "key" in data and str(data["key"]) == key:
            return TrainingRows(data["X"], data["y"], data["mention"], data["qid"], data["doc"].tolist(),
                                data["lang"].tolist(), data["gold"].tolist())
        print(f"{cache.name}: computed by other code or from other data; computing again", flush=True)
    rows = _rows_for(name, index, work)
    np.savez(cache, X=rows.X, y=rows.y, mention=rows.mention, qid=rows.qid, doc=np.array(rows.mention_doc),
             lang=np.array(rows.mention_lang), gold=np.array(rows.mention_gold), key=np.array(key))
    return rows


def _rows_for(name: str, index: Path, work: Path):
    from mel.aliases import AliasSettings, AliasTable, count_aliases
    from mel.fitting import concatenate
    from mel.linker.features import FEATURES
    from mel.linker.folder import LinkerIndex
    from mel.linker.model import Reranker
    from mel.linker.ranker import open_linker
    from mel.model_cache import resolve_model
    from mel.retrieval import EncoderSettings
    from mel.skips import SkipReport
    from mel.tuning import collect_rows

    docs = documents(name)
    encoder = EncoderSettings().open(resolve_model(None))
    linker = open_linker(LinkerIndex.open(index), encoder, Reranker(FEATURES, 0.0, 0.1, ()))
    parts = [collect_rows(linker, docs)]
    for fold in range(FOLDS):
        held = [d for i, d in enumerate(docs) if i % FOLDS == fold]
        rest = [d for i, d in enumerate(docs) if i % FOLDS != fold]
        if not held or not rest:
            continue
        pairs = ((m.span.string, m.gold, m.lang) for d in rest for m in d.mentions if m.span is not None)
        folder = Path(tempfile.mkdtemp(dir=work)) / "aliases"
        count_aliases(folder, pairs, AliasSettings(loose=True, all_origins=True), sources=[], report=SkipReport())
        linker.use_aliases(AliasTable.open(folder))
        parts.append(collect_rows(linker, held, doc_offset=len(docs) * (fold + 1)))
    return concatenate(parts)


def main() -> int:
    parser = linker_data.bench_parser(__doc__)
    parser.add_argument("--out", default=str(linker_data.ROOT / "mel" / "linker" / "default-reranker.json"))
    args = parser.parse_args()
    work = linker_data.work_folder(args)
    if work is None:
        return 0
    from mel.artifacts import write_json
    from mel.fitting import FitSettings, concatenate, fit_reranker, measure
    from mel.gold import gold_fingerprints
    from mel.link_sketch import sketch_json

    rows, groups, sizes, base = [], [], [], 0
    for name in FIT_ON:
        index = linker_data.build(linker_data.kb_path(name), work / f"index-{name}")
        part = rows_for(name, index, work)
        print(f"{name}: {part.mentions:,} mention rows, {len(part.y):,} candidates", flush=True)
        rows.append(part)
        sizes.append(part.mentions)
        # The copies of a document (without and with a simulated alias table) share a fold.
        count = len(documents(name))
        groups.extend(base + doc % count for doc in part.mention_doc)
        base += count
    everything = concatenate(rows)
    weights = linker_data.equal_set_weights(sizes)
    # `mel eval` and `mel index tune` tell a user whose gold this is that its figures are in-sample.
    sketch = sketch_json(gold_fingerprints(m for name in FIT_ON for d in documents(name) for m in d.mentions))
    reranker = fit_reranker(everything, FitSettings(), meta={"fitted_on": FIT_ON, "sets_weigh_the_same": True,
                                                             "gold_sketch": sketch},
                            groups=groups, weights=weights, per_language=False, as_stated=False)
    write_json(args.out, reranker.to_json())
    print(f"{args.out}: {len(reranker.trees)} trees; in-sample {measure(reranker, everything)['R@1']:.3f} R@1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
