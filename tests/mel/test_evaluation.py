"""`mel eval`: recall@K with exactly known numbers on hand-made Mewsli-9 and JSONL sets, every method."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mel.aliases import AliasTable, build_alias_table
from mel.cli import main
from mel.evaluation import Tally, Unlinkable, gold_positions
from mel.gold import EvalMention
from mel.rankers import FuzzyRanker, tie_order
from mel.records import MentionProblem, ProblemKind
from tests.mel.mewsli_folder import HEADER, write_mewsli

# (docid, text or None for a missing file, [(surface, qid, qid_in_refs, freq_bin)]); a mention given
# as (position, length, surface, ...) is written as is (a span that need not match the text).
MEWSLI = {
    "es": [
        ("es-1", "París es la capital de Francia y Madrid la de España.",
         [("París", "Q90", True, 5), ("Francia", "Q142", True, 5), ("Madrid", "Q2807", True, 4),
          ("España", "Q29", True, 5)]),
        ("es-2", "Paris, en Texas, no es París.", [("París", "Q16559", False, 0)]),
        ("es-3", None, [(0, 6, "Berlín", "Q64", True, 4)]),
        ("es-4", "Vive en \"Madrid\".", [("Madrid", "Q2807", True, 4)]),
    ],
    "de": [
        ("de-1", "Berlin ist die Hauptstadt von Deutschland.",
         [("Berlin", "Q64", True, 4), ("Deutschland", "Q183", True, 5)]),
        ("de-2", "München\tliegt in Bayern.", [("München", "Q1726", True, 3)]),
        ("de-3", "Paris ist groß.", [(0, 4, "Wien", "Q1741", True, 4)]),
        ("de-4", "Paris (Texas) ist klein.", [("Paris (Texas)", "Q16559", False, 0)]),
    ],
}
# Label index entries: seven QIDs, so R@10 finds every gold QID that is in the KB.
KB = [("Q90", "es", "París", "capital de Francia"), ("Q142", "es", "Francia", "país de Europa occidental"),
      ("Q2807", "es", "Madrid", "capital de España"), ("Q16559", "en", "Paris (Texas)", "city in Texas"),
      ("Q64", "de", "Berlin", "Hauptstadt Deutschlands"), ("Q183", "de", "Deutschland", "Staat in Mitteleuropa"),
      ("Q1726", "de", "München", "Hauptstadt Bayerns")]


def write_kb(path: Path, entries=KB) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for qid, lang, label, description in entries:
            out.write(json.dumps({"qid": qid, "lang": lang, "label": label, "description": description},
                                 ensure_ascii=False) + "\n")
    return path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def build_index(kb: Path, out: Path, *extra) -> Path:
    result = run("index", "build", "--kb", kb, "-o", out, "--precision", "fp32", "--exact", "-q", *extra)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def mewsli(tmp_path_factory) -> Path:
    return write_mewsli(tmp_path_factory.mktemp("mewsli") / "dataset", MEWSLI)


@pytest.fixture(scope="module")
def label_index(default_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("labels")
    return build_index(write_kb(folder / "kb.jsonl"), folder / "idx", "--kinds", "label")


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-12


# --- exact numbers on a Mewsli-9 folder -----------------------------------------


@pytest.mark.slow
def test_mewsli9_recall_micro_macro_splits_and_upper_bound(mewsli, label_index, tmp_path):
    report_path = tmp_path / "out" / "report.json"
    result = run("eval", "mewsli9", mewsli, "--index", label_index, "--method", "biencoder", "--k", "1,10",
                 "--precision", "fp32", "--exact", "--report", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    results = report["results"]
    # es: 7 mentions; R@1: París, Francia, Madrid x2; "París" meaning Paris (Texas) is 2nd;
    # España is not in the KB; es-3's text is missing. de: 5; the bad span (Wien) is not in the KB.
    assert results["es"]["mentions"] == 7 and results["de"]["mentions"] == 5
    assert close(results["es"]["R@1"], 4 / 7) and close(results["es"]["R@10"], 5 / 7)
    assert close(results["de"]["R@1"], 4 / 5) and close(results["de"]["R@10"], 4 / 5)
    assert results["es"]["hits"] == {"1": 4, "10": 5}
    assert close(results["micro"]["R@1"], 8 / 12) and close(results["micro"]["R@10"], 9 / 12)
    assert close(results["macro"]["R@1"], (4 / 7 + 4 / 5) / 2) and close(results["macro"]["R@10"], (5 / 7 + 4 / 5) / 2)
    assert results["macro"]["languages"] == 2 and results["micro"]["mentions"] == 12
    upper = report["upper_bound"]
    assert upper["es"]["in_kb"] == 6 and upper["de"]["in_kb"] == 4
    assert close(upper["micro"]["share"], 10 / 12) and close(upper["macro"]["share"], (6 / 7 + 4 / 5) / 2)

    bins = report["by_freq_bin"]
    assert list(bins) == ["0", "3", "4", "5"]
    assert bins["0"]["micro"]["mentions"] == 2 and close(bins["0"]["micro"]["R@1"], 1 / 2)
    assert close(bins["0"]["micro"]["R@10"], 1.0)
    assert bins["0"]["es"]["hits"] == {"1": 0, "10": 1} and bins["0"]["de"]["hits"] == {"1": 1, "10": 1}
    assert bins["3"]["micro"]["hits"] == {"1": 1, "10": 1}
    assert bins["4"]["micro"]["mentions"] == 5 and bins["4"]["micro"]["hits"] == {"1": 3, "10": 3}
    assert bins["5"]["micro"]["mentions"] == 4 and bins["5"]["micro"]["hits"] == {"1": 3, "10": 3}
    refs = report["by_qid_in_refs"]
    assert refs["False"]["micro"]["hits"] == {"1": 1, "10": 2} and refs["False"]["micro"]["mentions"] == 2
    assert refs["True"]["micro"]["hits"] == {"1": 7, "10": 7} and refs["True"]["micro"]["mentions"] == 10

    bad = report["unlinkable_mentions"]
    assert bad["count"] == 2 and bad["treatment"] == "counted as misses"
    assert bad["by_kind"] == {"text file missing": 1, "span does not match the text": 1}
    assert bad["examples"] == [f"{mewsli / 'de' / 'mentions.tsv'}:5: text at 0-4 is 'Pari', not 'Wien'",
                               f"{mewsli / 'es' / 'mentions.tsv'}:7: text file missing"]
    assert results["es"]["unlinkable_counted_as_misses"] == 1

    # Reproducibility: data checksums, index and model, method, versions, command.
    assert report["method"] == "biencoder" and report["parameters"]["ks"] == [1, 10]
    assert report["dataset"]["mentions_sha256"]["de"] == hashlib.sha256(
        (mewsli / "de" / "mentions.tsv").read_bytes()).hexdigest()
    assert report["index"]["manifest_sha256"] == hashlib.sha256(
        (label_index / "views" / "string" / "manifest.json").read_bytes()).hexdigest()
    assert report["index"]["query_encoding"] == "string"
    assert report["model"]["checksum"] == report["model"]["index_model_checksum"]
    assert report["model"]["precision"] == "fp32"
    assert report["mel_version"] and report["created"] and "tool_versions" in report and report["command"]
    assert any("label index" in note for note in report["notes"])
    assert "mel: note:" in result.output and "unlinkable" in result.output
    # The table on stdout.
    assert "micro" in result.output and "66.7" in result.output and "upper bound" in result.output

    skipped = run("eval", "mewsli9", mewsli, "--index", label_index, "--k", "1,10", "--precision", "fp32",
                  "--exact", "--skip-bad", "--report", report_path, "--langs", "de,es", "-q")
    assert skipped.exit_code == 0, skipped.output
    report = json.loads(report_path.read_text())
    results = report["results"]
    assert results["es"]["mentions"] == 6 and results["de"]["mentions"] == 4
    assert results["es"]["hits"] == {"1": 4, "10": 5} and results["de"]["hits"] == {"1": 4, "10": 4}
    assert close(results["micro"]["R@1"], 8 / 10) and close(results["micro"]["R@10"], 9 / 10)
    assert report["unlinkable_mentions"]["treatment"] == "excluded (--skip-bad)"
    assert report["unlinkable_mentions"]["count"] == 2
    assert report["upper_bound"]["micro"]["mentions"] == 10

    one = run("eval", "mewsli9", mewsli / "de", "--index", label_index, "--k", "1", "--precision", "fp32", "--exact",
              "--report", report_path, "-q")
    assert one.exit_code == 0, one.output
    assert list(json.loads(report_path.read_text())["results"]) == ["de", "micro", "macro"]


@pytest.mark.slow
def test_biencoder_end_to_end_agrees_with_mel_link(mewsli, default_model, tmp_path):
    """A description index, mentions in context: eval's R@K is what `mel link` answers."""
    index = build_index(write_kb(tmp_path / "kb.jsonl"), tmp_path / "desc")
    report_path = tmp_path / "report.json"
    result = run("eval", "mewsli9", mewsli, "--index", index, "--method", "biencoder", "--k", "1,10", "--precision",
                 "fp32", "--exact", "--report", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["index"]["query_encoding"] == "context"
    assert [note for note in report["notes"] if "could not be linked" not in note] == []

    from mel.gold import SourceNotes, mewsli_documents
    from mel.skips import SkipReport

    docs = tmp_path / "docs.jsonl"
    read = mewsli_documents(mewsli, ["de", "es"], report=SkipReport(), notes=SourceNotes())
    with open(docs, "w", encoding="utf-8") as out:
        for number, mention in enumerate(m for document in read for m in document.mentions):
            if mention.span is not None:
                out.write(json.dumps({"id": str(number), "lang": mention.lang, "text": mention.span.text,
                                      "mentions": [{"start": mention.span.start, "end": mention.span.end,
                                                    "qid": f"Q{mention.gold}"}]}) + "\n")
    linked = tmp_path / "linked.jsonl"
    link = run("link", docs, "--index", index, "--method", "biencoder", "-o", linked, "--top-k", "10", "--precision",
               "fp32", "--exact", "-q")
    assert link.exit_code == 0, link.output
    hits: dict[str, list[int]] = {"de": [0, 0], "es": [0, 0]}
    for line in linked.read_text().splitlines():
        record = json.loads(line)
        mention = record["mentions"][0]
        ranked = [c["qid"] for c in mention["candidates"]]
        hits[record["lang"]][0] += ranked[:1] == [mention["gold_qid"]]
        hits[record["lang"]][1] += mention["gold_qid"] in ranked
    for lang in ("de", "es"):
        assert report["results"][lang]["hits"] == {"1": hits[lang][0], "10": hits[lang][1]}
    # Seven QIDs in the index: R@10 finds every linkable gold QID that is in it.
    assert report["results"]["es"]["hits"]["10"] == 5 and report["results"]["de"]["hits"]["10"] == 4

    jsonl = run("eval", "jsonl", docs, "--index", index, "--method", "biencoder", "--k", "1,10", "--precision", "fp32",
                "--exact", "--report", tmp_path / "jsonl.json", "-q")
    assert jsonl.exit_code == 0, jsonl.output
    again = json.loads((tmp_path / "jsonl.json").read_text())
    assert again["results"]["es"]["hits"] == report["results"]["es"]["hits"]
    assert again["dataset"]["kind"] == "jsonl" and len(again["dataset"]["sha256"]) == 64


# --- the methods, on a set where they differ ----------------------------------------

TRAINING = [("Granada", "Q8810")] * 3 + [("Granada", "Q769"), ("París", "Q90"), ("París", "Q90"),
                                          ("París", "Q16559"), ("Deutschland", "Q183"), ("España", "Q29"),
                                          ("Selección de España", "Q42267")]
# (surface, gold): how each method does is worked out in test_methods_differ.
HELD_OUT = [("Granada", "Q8810"), ("París", "Q16559"), ("Deutchland", "Q183"), ("España", "Q29"),
            ("Múnich", "Q1726"), ("España", "Q42267")]
LABELS_KB = [("Q8810", "es", "Granada", ""), ("Q769", "es", "Grenada", ""), ("Q90", "es", "París", ""),
             ("Q16559", "es", "Paris (Texas)", ""), ("Q1726", "es", "Múnich", "")]


def write_documents(path: Path, mentions) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        for number, (surface, qid) in enumerate(mentions):
            text = f"Noticia: {surface} hoy."
            out.write(json.dumps({"id": f"d{number}", "lang": "es", "text": text,
                                  "mentions": [{"start": 9, "end": 9 + len(surface), "qid": qid}]},
                                 ensure_ascii=False) + "\n")
    return path


@pytest.mark.slow
def test_methods_differ(default_model, tmp_path):
    aliases = tmp_path / "aliases"
    build_alias_table(aliases, [str(write_documents(tmp_path / "train.jsonl", TRAINING))])
    held_out = write_documents(tmp_path / "held_out.jsonl", HELD_OUT)
    olpeat = tmp_path / "olpeat"
    built = run("index", "build", "--aliases", aliases, "-o", olpeat, "--precision", "fp32", "--exact", "-q")
    assert built.exit_code == 0, built.output
    labels = build_index(write_kb(tmp_path / "labels.jsonl", LABELS_KB), tmp_path / "labels", "--kinds", "label")

    def evaluate(method: str, *source) -> dict:
        path = tmp_path / f"{method}.json"
        result = run("eval", "jsonl", held_out, "--method", method, *source, "--k", "1,10", "--precision", "fp32",
                     "--exact", "--report", path, "-q")
        assert result.exit_code == 0, result.output
        report = json.loads(path.read_text())
        assert report["method"] == method
        return report

    # alias: Granada -> Q8810 (3 links) before Q769 (1); "París" is Paris (Texas) 2nd; the typo, Múnich
    # (no alias) and España meaning the team (its alias lists Q29 only) are misses.
    alias = evaluate("alias", "--aliases", aliases)
    assert alias["results"]["es"]["hits"] == {"1": 2, "10": 3}
    assert alias["upper_bound"]["es"]["in_kb"] == 5  # Q1726 is no alias's target
    assert alias["exact_matches"] == 4 and alias["aliases"]["settings"]["cased"] is True
    # fuzzy: as alias, and the typo "Deutchland" finds "Deutschland".
    fuzzy = evaluate("fuzzy", "--aliases", aliases)
    assert fuzzy["results"]["es"]["hits"] == {"1": 3, "10": 4}
    # olpeat: the nearest alias strings; the typo's nearest is "Deutschland"; the tie between the two
    # "Granada" entries goes to the more linked; R@10 spans every alias QID, so the team is found.
    olpeat_report = evaluate("olpeat", "--index", olpeat)
    assert olpeat_report["results"]["es"]["hits"] == {"1": 3, "10": 5}
    assert olpeat_report["tie_break"].startswith("best entry id")
    assert olpeat_report["upper_bound"]["es"]["in_kb"] == 5
    # labels: entity labels only: Granada, París (2nd), Múnich; Q183, Q29, Q42267 are not in its KB.
    labels_report = evaluate("labels", "--index", labels)
    assert labels_report["results"]["es"]["hits"] == {"1": 2, "10": 3}
    assert labels_report["upper_bound"]["es"]["in_kb"] == 3
    assert not labels_report["notes"] and labels_report["in_training_links"] is None
    # Three held-out mentions are word for word training links (text, offsets and entity): the
    # methods that read the alias table say so, and why it matters.
    for report in (alias, fuzzy, olpeat_report):
        assert report["in_training_links"] == {"checked": 6, "found": 3}
    (note,) = olpeat_report["notes"]
    assert note.startswith("3 of 6 gold mentions checked are training links of the index") and "in-sample" in note
    # The wrong index for the method is noted.
    swapped = evaluate("olpeat", "--index", labels)
    assert any("not built from an alias table" in note for note in swapped["notes"])


@pytest.mark.slow
def test_methods_are_refused_with_the_wrong_source(mewsli, label_index, default_model, tmp_path):
    desc = build_index(write_kb(tmp_path / "kb.jsonl"), tmp_path / "desc", "--kinds", "description")
    refused = run("eval", "mewsli9", mewsli, "--method", "olpeat", "--index", desc)
    assert refused.exit_code == 1
    assert "--method olpeat searches the string view, which" in refused.output and "--kinds label" in refused.output
    assert "--kinds label" in run("eval", "mewsli9", mewsli, "--method", "labels", "--index", desc).output
    old = run("eval", "mewsli9", mewsli, "--method", "olpeat", "--index", desc / "views" / "context")
    assert old.exit_code == 1 and "--method olpeat queries with the mention string alone" in old.output
    assert "needs --aliases" in run("eval", "mewsli9", mewsli, "--method", "alias").output
    assert "needs --index" in run("eval", "mewsli9", mewsli).output
    build_alias_table(tmp_path / "a", ["tests/data/damuel/es"])
    both = run("eval", "mewsli9", mewsli, "--method", "fuzzy", "--aliases", tmp_path / "a", "--index", desc)
    assert both.exit_code == 1 and "--index is for" in both.output
    assert "--aliases is for" in run("eval", "mewsli9", mewsli, "--index", desc, "--aliases", tmp_path / "a").output
    assert run("eval", "mewsli9", mewsli, "--index", desc, "--k", "0").exit_code == 2
    unknown = run("eval", "mewsli9", mewsli, "--index", desc, "--langs", "xx")
    assert unknown.exit_code == 1 and "no mentions for language(s) xx" in unknown.output


def test_alias_method_on_mewsli_without_a_model(mewsli, tmp_path):
    """Alias lookups need no model; a fuzzy miss widens past aliases of one QID."""
    aliases = tmp_path / "aliases"
    build_alias_table(aliases, [str(write_documents(tmp_path / "train.jsonl",
                                                    [("París", "Q90"), ("Francia", "Q142"), ("Berlin", "Q64"),
                                                     ("Berlín", "Q64"), ("Madrid", "Q2807")]))])
    report_path = tmp_path / "alias.json"
    result = run("eval", "mewsli9", mewsli, "--method", "alias", "--aliases", aliases, "--k", "1,100",
                 "--report", report_path, "-q")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    # es: París, Francia, Madrid x2 (Berlín's text is missing); de: Berlin.
    assert report["results"]["es"]["hits"] == {"1": 4, "100": 4}
    assert report["results"]["de"]["hits"] == {"1": 1, "100": 1}
    assert report["aliases"]["manifest_sha256"] == hashlib.sha256((aliases / "manifest.json").read_bytes()).hexdigest()
    assert "index" not in report and "model" not in report


def test_fuzzy_widens_until_k_distinct_qids(tmp_path):
    near = [(f"xa{i}", "Q1") for i in range(20)]
    build_alias_table(tmp_path / "a", [str(write_documents(tmp_path / "t.jsonl",
                                                           near + [("yyyyyy", "Q3")] * 2 + [("zzzzzz", "Q2")]))])
    ranker = FuzzyRanker(AliasTable.open(tmp_path / "a"), workers=1)
    ranking = ranker.rank(ranker.prepare([]) + ["xa", "xa7", "qqqq"], 3)
    ranked = ranking.qids
    # "xa": the 20 nearest aliases all mean Q1; then Q3 (2 links) before Q2 (1) at equal distance.
    # "xa7" is an alias: exact lookup only. "qqqq" is equally far from all: the most linked alias
    # first (Q3), then alias order ("xa0" < "zzzzzz").
    assert ranked.tolist() == [[1, 3, 2], [1, -1, -1], [3, 1, 2]]
    # Scores: 1 - the nearest alias's distance for fuzzy hits, the link share for exact ones.
    assert ranking.scores[1].tolist()[0] == 1.0 and 0 < ranking.scores[0, 0] < 1
    assert ranker.exact_matches == 1 and ranker.queries == 3


def test_tallies_and_helpers():
    ranked = np.array([[5, 7, -1], [7, 5, 9], [1, 2, 3]])
    assert gold_positions(ranked, np.array([7, 9, 4])).tolist() == [1, 2, -1]
    tally = Tally((1, 3))
    missing = MentionProblem(ProblemKind.TEXT_MISSING, "text file missing")
    mention = EvalMention(lang="xx", gold=1, span=None, freq_bin=2, qid_in_refs=None, problem=missing)
    tally.add(mention, -1, True)
    table = tally.recall_table()
    assert table["xx"]["mentions"] == 1 and table["xx"]["unlinkable_counted_as_misses"] == 1
    assert tally.values("freq_bin") == ["2"] and tally.values("qid_in_refs") == []
    unlinkable = Unlinkable()
    unlinkable.add(EvalMention("xx", 1, None, problem=MentionProblem(ProblemKind.SPAN_OUTSIDE, "span 3-9 outside")))
    assert unlinkable.by_kind == {"span outside the text": 1}
    # Ties (same score) follow the entry id; padding stays last.
    qids = np.array([[769, 8810, 90, -1]])
    scores = np.array([[1.0, 1.0 - 1e-7, 0.5, -np.inf]], dtype=np.float32)
    entries = np.array([[3, 2, 0, -1]])
    order = tie_order(scores, entries, qids >= 0)
    assert np.take_along_axis(qids, order, axis=1).tolist() == [[8810, 769, 90, -1]]


def test_jsonl_bad_records_and_mentions_without_gold_are_reported(tmp_path):
    aliases = tmp_path / "aliases"
    build_alias_table(aliases, [str(write_documents(tmp_path / "train.jsonl", [("París", "Q90"), ("Berlin", "Q64")]))])
    lines = [
        {"id": "a", "lang": "es", "text": "París y Berlin", "mentions": [
            {"start": 0, "end": 5, "qid": "Q90", "freq_bin": 3, "qid_in_refs": True}, {"start": 8, "end": 14}]},
        "{not json",
        {"id": "b", "lang": "es", "text": "corto", "mentions": [{"start": 0, "end": 50, "qid": "Q1"}]},
        {"id": "c", "text": "Berlin", "mentions": [{"start": 0, "end": 6, "qid": "Q64"}]},
        {"id": "d", "lang": "de", "text": "Berlin", "mentions": [{"start": 0, "end": 6, "qid": "Q64"}]},
    ]
    data = "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
    result = CliRunner().invoke(main, ["eval", "jsonl", "-", "--method", "alias", "--aliases", str(aliases),
                                       "--k", "1", "--langs", "es,und", "--report", str(tmp_path / "r.json")],
                                input=data + "\n")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["results"]["es"]["hits"] == {"1": 1} and report["results"]["und"]["hits"] == {"1": 1}
    assert report["by_freq_bin"]["3"]["es"]["mentions"] == 1 and report["by_qid_in_refs"]["True"]["es"]["mentions"] == 1
    source = report["source"]
    assert source["mentions_without_gold"] == 1 and source["documents"] == 2
    assert sum(source["skipped"].values()) == 2
    assert any(e.startswith("<stdin>:2: ") for e in source["examples"])
    assert any(e.startswith("<stdin>:3: mention 1: span 0-50 outside text") for e in source["examples"])
    assert source["filtered"]["document in language 'de' (not selected)"] == 1
    assert "skipped 1 record(s)" in result.output and report["dataset"]["path"] == "-"


def test_recall_counts_distinct_qids_not_entries(tiny_model, tmp_path):
    """Q90 has five label entries, Q16559 one: the gold Q16559 is 2nd of the distinct QIDs."""
    kb = tmp_path / "kb.jsonl"
    kb.write_text(json.dumps({"qid": "Q90", "lang": "es", "label": "París",
                              "aliases": ["Paris", "Parii", "Parigi", "Paryż"]}, ensure_ascii=False) + "\n"
                  + json.dumps({"qid": "Q16559", "lang": "es", "label": "Paris (Texas)"}) + "\n")
    index = build_index(kb, tmp_path / "idx", "--kinds", "label", "--model", tiny_model)
    docs = write_documents(tmp_path / "docs.jsonl", [("París", "Q16559")])
    result = run("eval", "jsonl", docs, "--index", index, "--k", "1,2", "--exact", "--precision", "fp32",
                 "--report", tmp_path / "r.json", "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r.json").read_text())["results"]["es"]["hits"] == {"1": 0, "2": 1}


def test_when_every_gold_record_is_skipped_the_error_says_why(label_index, tmp_path):
    # The skip report is printed after the results; with nothing left to evaluate the error is
    # all the user sees, so it carries what was skipped and where.
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "a", "text": "Paris", "mentions": [{"start": 0, "end": 99, "qid": "Q90"}]}\n'
                    '{"id": "b", "text": "Francia", "mentions": [{"start": 0, "end": 7, "qid": "X142"}]}\n')
    result = run("eval", "jsonl", gold, "--index", label_index, "-q")
    assert result.exit_code == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mel: error:")]
    assert line.startswith(f"mel: error: {gold}: no mentions with a gold qid to evaluate (skipped 1 (")
    assert "outside text of 5 characters" in line and "not a Wikidata item id: 'X142'" in line and f"{gold}:1" in line
    assert "Traceback" not in result.output


def test_a_mewsli_folder_with_no_usable_mention_says_why(label_index, tmp_path):
    folder = tmp_path / "dataset" / "es"
    (folder / "text").mkdir(parents=True)
    (folder / "text" / "es-1").write_text("París.", encoding="utf-8")
    (folder / "docs.tsv").write_text("docid\ttitle\tcurid\trevid\turl\ttext_md5\nes-1\tes-1\t1\t1\tu\t\n")
    (folder / "mentions.tsv").write_text("\t".join(HEADER) + "\nes-1\t0\t5\tParís\tu\tes\tnope\tTrue\t5\n")
    result = run("eval", "mewsli9", tmp_path / "dataset", "--index", label_index, "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("mel: error:")]
    assert "no usable mentions (skipped 1 (" in line and "mentions.tsv:2" in line and "see the report" not in line


def test_train_eval_sets_without_gold_mentions_say_why(tmp_path):
    from mel.errors import InputError
    from mel.gold import EvalSpec
    from mel.training.evaluation import read_held_out

    gold = tmp_path / "held.jsonl"
    gold.write_text('{"id": "a", "text": "Paris", "mentions": [{"start": 0, "end": 5, "qid": "Paris"}]}\n')
    with pytest.raises(InputError, match=r"no mentions with a gold QID \(skipped 1 \(.*not a Wikidata item id"):
        read_held_out(EvalSpec.parse(f"jsonl:{gold}"))
