"""The fused linker with the offline default model: each kind of evidence decides a hand-built case,
candidates carry probabilities and views, --explain, --min-prob, tuning, and older indexes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from mel.cli import main
from tests.mel.mewsli_folder import write_mewsli

pytestmark = pytest.mark.slow


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def entity(qid: str, label: str, description: str = "", aliases: tuple[str, ...] = ()) -> dict:
    return {"qid": qid, "lang": "en", "label": label, "description": description, "aliases": list(aliases)}


def doc(doc_id: str, text: str, *spans: tuple[str, str | None]) -> dict:
    mentions, at = [], 0
    for surface, qid in spans:
        start = text.index(surface, at)
        mentions.append({"start": start, "end": start + len(surface), **({"qid": qid} if qid else {})})
        at = start + len(surface)
    return {"id": doc_id, "lang": "en", "text": text, "mentions": mentions}


def link(index: Path, tmp_path: Path, records: list[dict], *extra) -> list[dict]:
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    result = run("link", source, "--index", index, "-o", out, "-q", *extra)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in out.read_text().splitlines()]


def build(tmp_path: Path, name: str, kb: list[dict], *extra) -> Path:
    index = tmp_path / name
    result = run("index", "build", "--kb", write_jsonl(tmp_path / f"{name}.kb.jsonl", kb), "-o", index, "-q", *extra)
    assert result.exit_code == 0, result.output
    return index


DISTRACTORS = [entity("Q1048", "Julius Caesar"), entity("Q90", "Paris"), entity("Q64", "Berlin")]


def test_an_alias_prior_overrides_a_closer_label(default_model, tmp_path):
    kb = [entity("Q60", "New York City", aliases=("NYC",)), entity("Q4875340", "Big Apple"), *DISTRACTORS]
    links = write_jsonl(tmp_path / "links.jsonl", [
        doc(f"t{i}", f"Tourists love the Big Apple in spring number {i}.", ("Big Apple", "Q60")) for i in range(30)])
    index = build(tmp_path, "prior", kb, "--links", links)
    # Tuned on gold mentions other than the links: the shipped default is fitted on sets whose
    # simulated alias tables hold a handful of links per name, never thirty. The new trees are
    # right on every held-out "Big Apple", the shipped ones on none: --refit auto keeps them.
    gold = write_jsonl(tmp_path / "prior-gold.jsonl", [
        doc(f"g{i}", f"{place} in the news again, story {i}: the Big Apple and {place}.", (place, qid),
            ("Big Apple", "Q60"))
        for i, (place, qid) in enumerate([("Paris", "Q90"), ("Berlin", "Q64")] * 20)])
    report = tmp_path / "tune.json"
    result = run("index", "tune", index, "--gold", gold, "--trees", "50", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["refit"]["chosen"] == "trees", result.stderr
    assert "wrote new trees and their calibration (--refit auto)" in result.stderr
    (record,) = link(index, tmp_path, [doc("d", "We flew to the Big Apple last week.", ("Big Apple", None))])
    mention = record["mentions"][0]
    assert mention["qid"] == "Q60", mention
    found = {c["qid"]: c for c in mention["candidates"]}
    assert "aliases" in found["Q60"]["views"] and "names" in found["Q4875340"]["views"]


CASES = json.loads((Path(__file__).parents[2] / "data" / "linker-cases.json").read_text(encoding="utf-8"))


def case_docs(name: str, with_gold: bool) -> list[dict]:
    return [doc(f"{name}{i}", text, *((s, q if with_gold else None) for s, q in spans))
            for i, (text, spans) in enumerate(CASES[name])]


def tuned_case_index(tmp_path: Path, name: str) -> Path:
    """An index of the case's KB, tuned on its hand-written training documents (the shipped
    default is fitted on sets without descriptions or many repeated names: tuning teaches the
    reranker what a user's own gold data shows)."""
    index = build(tmp_path, name, [entity(q, label, description) for q, label, description in CASES[f"{name}_kb"]])
    gold = write_jsonl(tmp_path / f"{name}-gold.jsonl", case_docs(f"{name}_train", with_gold=True))
    result = run("index", "tune", index, "--gold", gold, "--trees", "50", "--refit", "trees", "-q")
    assert result.exit_code == 0, result.output
    return index


def gold_of(name: str) -> list[list[str]]:
    return [[q for _, q in spans] for _, spans in CASES[name]]


def test_a_later_short_mention_follows_an_earlier_long_one(default_model, tmp_path):
    index = tuned_case_index(tmp_path, "coref")
    linked = link(index, tmp_path, case_docs("coref_test", with_gold=False), "--explain")
    assert [[m["qid"] for m in r["mentions"]] for r in linked] == gold_of("coref_test")
    later = linked[1]["mentions"][2]  # "Jordan" after "Michael Jordan": the country is the exact label
    by_qid = {c["qid"]: c["features"] for c in later["candidates"]}
    assert by_qid["Q41421"]["coref_longer"] == 1 and by_qid["Q810"]["coref_longer"] == 0
    assert by_qid["Q810"]["exact"] == 1 and by_qid["Q41421"]["exact"] == 0


def test_context_separates_two_entities_of_one_name_when_descriptions_exist(default_model, tmp_path):
    index = tuned_case_index(tmp_path, "context")
    linked = link(index, tmp_path, case_docs("context_test", with_gold=False))
    chosen = [[m["qid"] for m in r["mentions"]] for r in linked]
    right = sum(c == g for c, g in zip(chosen, gold_of("context_test"), strict=True))
    # Every pair is one label twice (string evidence ties); half the time the right one has the higher QID.
    assert right >= 9, list(zip(chosen, gold_of("context_test")))
    assert chosen[:2] == [["Q312"], ["Q89"]]
    assert all("context" in r["mentions"][0]["candidates"][0]["views"] for r in linked)


def test_probabilities_views_explain_and_min_prob(default_model, tmp_path):
    index = build(tmp_path, "basic", [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS])
    records = [doc("d", "Paris is the capital of France.", ("Paris", None), ("France", None))]
    (record,) = link(index, tmp_path, records, "--explain")
    for mention in record["mentions"]:
        scores = [c["score"] for c in mention["candidates"]]
        assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True) and sum(scores) <= 1.0001
        top = mention["candidates"][0]
        assert set(top["views"]) <= {"string", "context", "names", "aliases"} and top["views"]
        assert set(top["features"]) >= {"string_score", "loose", "log_qid", "coref_longer", "prior"}
    assert [m["qid"] for m in record["mentions"]] == ["Q90", "Q142"]
    (nil,) = link(index, tmp_path, records, "--min-prob", "1.0")
    assert [m["qid"] for m in nil["mentions"]] == [None, None] and nil["mentions"][0]["candidates"]
    refused = run("link", tmp_path / "in.jsonl", "--index", index, "--method", "labels", "--min-prob", "0.5")
    assert refused.exit_code == 2 and "--min-prob needs --method linker" in refused.stderr


def test_eval_reports_calibration_and_nil_scores_for_the_linker(default_model, tmp_path):
    index = build(tmp_path, "eval", [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS])
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        doc("g1", "Paris and Berlin are capitals.", ("Paris", "Q90"), ("Berlin", "Q64")),
        doc("g2", "France borders Germany.", ("France", "Q142"), ("Germany", "Q183")),
        doc("g3", "Rome is not in the KB.", ("Rome", "Q220"))])
    for method, probabilities in (("linker", True), ("labels", False)):
        report = tmp_path / f"{method}.json"
        result = run("eval", "jsonl", gold, "--index", index, "--method", method, "--min-prob", "0.3",
                     "--report", report, "-q")
        assert result.exit_code == 0, result.output
        data = json.loads(report.read_text())
        assert data["results"]["micro"]["mentions"] == 5
        if probabilities:
            assert set(data["calibration"]) == {"ece", "ece_if_calibrated", "bins"}
            assert len(data["calibration"]["bins"]) == 10 and 0 < data["calibration"]["ece_if_calibrated"] < 1
            nil = data["nil"]
            assert nil["mentions"] == 5 and nil["not_in_kb"] == 1 and nil["threshold"] == 0.3
            assert 0 <= nil["precision"] <= 1 and nil["correct"] <= nil["linked"]
        else:
            assert data["calibration"] is None and data["nil"] is None
    shown = run("eval", "jsonl", gold, "--index", index, "--min-prob", "0.3").output
    assert "calibration error (ECE)" in shown and "a perfectly calibrated linker would show" in shown
    assert "linked at probability >= 0.3:" in shown and "precision" in shown


def test_tune_writes_a_checksummed_reranker_that_link_uses(default_model, tmp_path):
    kb = [entity("Q142", "France"), entity("Q183", "Germany"), entity("Q1", "France", aliases=("République",)),
          *DISTRACTORS]
    index = build(tmp_path, "tune", kb)
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        doc(f"g{i}", f"Story {i}: France and Germany met in Paris.", ("France", "Q142"), ("Germany", "Q183"),
            ("Paris", "Q90")) for i in range(10)])
    report = tmp_path / "tune.json"
    result = run("index", "tune", index, "--gold", gold, "--trees", "20", "--refit", "trees", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert "held-out R@1" in result.stderr and "a perfectly calibrated linker would show" in result.stderr
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["reranker"]["gold"] == [str(gold)] and (index / "reranker.json").is_file()
    # The manifest says how the reranker was made, and the reranker which fitting library grew its trees.
    from mel.artifacts import command_line

    assert manifest["reranker"]["command"] == command_line()
    assert {"mel", "scikit-learn", "scipy"} <= set(manifest["reranker"]["tool_versions"])
    written = json.loads((index / "reranker.json").read_text())["meta"]
    assert written["tool_versions"]["scikit-learn"] == manifest["reranker"]["tool_versions"]["scikit-learn"]
    assert json.loads(report.read_text())["held_out"]["after"]["mentions"] == 6  # documents 4 and 9
    assert run("index", "verify", index, "--sample", "10").exit_code == 0
    # Evaluated on the gold it was tuned on, the index says its figures are in-sample; on other
    # documents it checks them and says nothing.
    evaluated = tmp_path / "eval.json"
    result = run("eval", "jsonl", gold, "--index", index, "--report", evaluated)
    assert result.exit_code == 0, result.output
    data = json.loads(evaluated.read_text())
    assert data["in_reranker_gold"] == {"trees": {"checked": 30, "found": 30}}
    assert ("mel: note: the reranker was fitted on these documents (its trees on 30 of the 30 gold mentions "
            "checked): these figures are in-sample") in result.stderr
    other = write_jsonl(tmp_path / "other.jsonl", [doc("o", "Germany beat France.", ("Germany", "Q183"),
                                                       ("France", "Q142"))])
    result = run("eval", "jsonl", other, "--index", index, "--report", evaluated)
    assert result.exit_code == 0 and "in-sample" not in result.stderr
    assert json.loads(evaluated.read_text())["in_reranker_gold"] == {"trees": {"checked": 2, "found": 0}}
    (record,) = link(index, tmp_path, [doc("d", "France won.", ("France", None))])
    assert record["mentions"][0]["qid"] == "Q142"
    (index / "reranker.json").write_text((index / "reranker.json").read_text().replace('"init": ', '"init": 1'))
    tampered = run("link", tmp_path / "in.jsonl", "--index", index, "-q")
    assert tampered.exit_code == 1 and "reranker.json: missing or changed" in tampered.stderr


def test_tune_on_a_little_gold_recalibrates_the_current_trees_unless_asked_for_new_ones(default_model, tmp_path):
    from mel.linker.features import FEATURES
    from mel.linker.model import read_reranker

    kb = [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS]
    index = build(tmp_path, "refit", kb)
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        doc(f"g{i}", f"Story {i}: France and Germany met in Paris.", ("France", "Q142"), ("Germany", "Q183"),
            ("Paris", "Q90")) for i in range(10)])
    shipped = read_reranker(None, FEATURES)
    report = tmp_path / "tune.json"
    # auto: both are right on every held-out mention, so nothing argues for new trees.
    result = run("index", "tune", index, "--gold", gold, "--trees", "10", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert "wrote the current reranker's trees, recalibrated on this gold (--refit auto)" in result.stderr
    assert "in-sample" not in result.stderr  # the shipped trees were fitted on other data
    assert "new trees alone right on 0, recalibrated alone on 0 (new trees are kept from 1 more)" in result.stderr
    data = json.loads(report.read_text())
    assert data["refit"] == {"asked": "auto", "chosen": "calibration", "sign_test": {
        "only_trees_right": 0, "only_recalibrated_right": 0, "needed": 1}}
    assert set(data["held_out"]["refits"]) == {"trees", "calibration"}
    assert data["held_out"]["after"] == data["held_out"]["refits"]["calibration"]
    written = read_reranker(index / "reranker.json", FEATURES)
    assert same_trees(written, shipped) and written.calibration != shipped.calibration
    assert written.meta["refit"] == "calibration" and written.meta["trees_from"]["created"] == shipped.meta["created"]
    assert json.loads((index / "manifest.json").read_text())["reranker"]["refit"] == "calibration"
    assert run("index", "verify", index, "--sample", "10").exit_code == 0
    # Asked for new trees, it fits them; asked for the calibration alone, it fits no trees.
    result = run("index", "tune", index, "--gold", gold, "--trees", "10", "--refit", "trees", "-q")
    assert result.exit_code == 0 and "wrote new trees and their calibration (--refit trees)" in result.stderr
    trees = read_reranker(index / "reranker.json", FEATURES)
    assert len(trees.trees) == 10 and trees.meta["refit"] == "trees"
    result = run("index", "tune", index, "--gold", gold, "--refit", "calibration", "--report", report, "-q")
    assert result.exit_code == 0 and "(--refit calibration)" in result.stderr
    again = read_reranker(index / "reranker.json", FEATURES)
    assert same_trees(again, trees) and again.meta["trees_from"]["gold"] == [str(gold)]
    assert again.meta["trees_from"]["tool_versions"] == trees.meta["tool_versions"]
    assert set(json.loads(report.read_text())["held_out"]["refits"]) == {"calibration"}
    # Those trees were fitted on this very gold, and the recalibration says so (again when the
    # current reranker is itself a recalibration of them, and whatever the gold file is called:
    # the reranker keeps a sketch of its gold mentions).
    assert (f"mel: note: the trees of {index}'s current reranker were fitted on 30 of the 30 gold mentions "
            "checked: recalibrated on it, their held-out figures are in-sample") in result.stderr
    renamed = tmp_path / "renamed.jsonl"
    renamed.write_bytes(gold.read_bytes())
    result = run("index", "tune", index, "--gold", renamed, "-q")
    assert result.exit_code == 0 and "fitted on 30 of the 30 gold mentions checked" in result.stderr
    twice = read_reranker(index / "reranker.json", FEATURES)  # a recalibration of a recalibration
    assert same_trees(twice, trees) and twice.meta["trees_from"]["created"] == trees.meta["created"]
    assert twice.meta["trees_from"]["gold"] == [str(gold)] and twice.meta["gold"] == [str(renamed)]
    other = write_jsonl(tmp_path / "other.jsonl", [
        doc(f"o{i}", f"Report {i}: Germany and France signed in Paris.", ("Germany", "Q183"), ("France", "Q142"))
        for i in range(10)])
    result = run("index", "tune", index, "--gold", other, "-q")
    assert result.exit_code == 0 and "in-sample" not in result.stderr


def test_tune_reads_a_mewsli_folder_as_it_reads_mel_documents(default_model, tmp_path):
    kb = [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS]
    index = build(tmp_path, "mewsli", kb)
    stories = [doc(f"g{i}", f"Story {i}: France and Germany met in Paris.", ("France", "Q142"), ("Germany", "Q183"),
                   ("Paris", "Q90")) for i in range(10)]
    as_mewsli = {"en": [(story["id"], story["text"], [(story["text"][m["start"]:m["end"]], m["qid"], True, 1)
                                                      for m in story["mentions"]]) for story in stories]}
    figures = {}
    for name, gold in (("jsonl", write_jsonl(tmp_path / "gold.jsonl", stories)),
                       ("mewsli", write_mewsli(tmp_path / "mewsli-9", as_mewsli))):
        report = tmp_path / f"{name}.json"
        result = run("index", "tune", index, "--gold", gold, "--trees", "10", "--refit", "trees", "--report", report,
                     "-q")
        assert result.exit_code == 0, result.output
        assert json.loads((index / "manifest.json").read_text())["reranker"]["gold"] == [str(gold)]
        data = json.loads(report.read_text())
        figures[name] = (data["held_out"]["after"]["mentions"], data["held_out"]["after"]["R@1"])
    assert figures["mewsli"] == figures["jsonl"] and figures["jsonl"][0] == 6  # documents 4 and 9


def same_trees(one, other) -> bool:
    return [t.to_json() for t in one.trees] == [t.to_json() for t in other.trees]


def test_tune_refuses_gold_that_is_the_index_own_training_links(default_model, tmp_path):
    kb = [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS]

    def story(i: int, prefix: str = "Story") -> dict:
        return doc(f"{prefix}{i}", f"{prefix} {i}: France and Germany met in Paris.", ("France", "Q142"),
                   ("Germany", "Q183"), ("Paris", "Q90"))

    links = write_jsonl(tmp_path / "links.jsonl", [story(i) for i in range(10)])
    index = build(tmp_path, "own", kb, "--links", links)
    # The same documents, and a copy that holds one of them among new ones: both refused, nothing written.
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [story(3)] + [story(i, "Report") for i in range(9)])
    for gold, found, checked in ((links, 30, 30), (mixed, 3, 30)):
        result = run("index", "tune", index, "--gold", gold, "--trees", "10", "-q")
        assert result.exit_code == 1 and "Traceback" not in result.output
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"mel: error: {gold}: {round(100 * found / checked)}% of its gold mentions "
                               f"({found} of {checked} checked) are training links of {index} (its --links)")
        assert not (index / "reranker.json").exists()
    # Gold held out of the links is tuned on, and the report says none of it was in them.
    held_out = write_jsonl(tmp_path / "held-out.jsonl", [story(i, "Report") for i in range(10)])
    report = tmp_path / "tune.json"
    result = run("index", "tune", index, "--gold", held_out, "--trees", "10", "--report", report, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["in_training_links"] == {"checked": 30, "found": 0}
    # One mention in 101 (under 1%) is tuned on, with a note.
    one = doc("Story3", "Story 3: France and Germany met in Paris.", ("France", "Q142"))
    few = write_jsonl(tmp_path / "few.jsonl", [one] + [doc(f"n{i}", f"Note {i}: Germany.", ("Germany", "Q183"))
                                                       for i in range(100)])
    result = run("index", "tune", index, "--gold", few, "--trees", "10", "-q")
    assert result.exit_code == 0, result.output
    assert "mel: note: 1 of 101 gold mentions checked are also training links" in result.stderr


def test_eval_says_when_its_gold_is_the_index_own_training_links(default_model, tmp_path):
    kb = [entity("Q142", "France"), entity("Q183", "Germany"), *DISTRACTORS]
    stories = [doc(f"s{i}", f"Story {i}: France and Germany met in Paris.", ("France", "Q142"), ("Germany", "Q183"),
                   ("Paris", "Q90")) for i in range(4)]
    links = write_jsonl(tmp_path / "links.jsonl", stories)
    index = build(tmp_path, "own", kb, "--kinds", "label,context", "--links", links)
    held_out = write_jsonl(tmp_path / "held-out.jsonl", [doc("r", "Report: France and Germany.", ("France", "Q142"),
                                                             ("Germany", "Q183"))])
    both = write_jsonl(tmp_path / "both.jsonl", [*stories[:1], doc("r", "Report: Germany.", ("Germany", "Q183"))])
    for method in ("linker", "alias", "biencoder"):
        for gold, found, checked in ((links, 12, 12), (both, 3, 4), (held_out, 0, 2)):
            report = tmp_path / "report.json"
            result = run("eval", "jsonl", gold, "--index", index, "--method", method, "--report", report, "-q")
            assert result.exit_code == 0, result.output
            assert json.loads(report.read_text())["in_training_links"] == {"checked": checked, "found": found}
            said = (f"mel: note: {found} of {checked} gold mentions checked are training links of the index "
                    "(--links at build)")
            assert (said in result.stderr) == bool(found), (method, gold, result.stderr)
    # An index without training links has nothing to compare with.
    plain = build(tmp_path, "plain", kb)
    report = tmp_path / "plain.json"
    assert run("eval", "jsonl", links, "--index", plain, "--report", report, "-q").exit_code == 0
    assert json.loads(report.read_text())["in_training_links"] is None


def test_tune_refuses_damuel_links_the_index_was_built_from(default_model, tmp_path):
    damuel = Path(__file__).parents[2] / "data" / "damuel" / "es"
    index = tmp_path / "damuel"
    assert run("index", "build", "--kb", damuel, "--links", damuel, "-o", index, "-q").exit_code == 0
    result = run("index", "tune", index, "--gold", damuel, "--trees", "10", "-q")
    assert result.exit_code == 1 and "% of its gold mentions" in result.stderr and "(its --links)" in result.stderr


def test_an_older_single_view_index_still_links(default_model, tmp_path):
    index = build(tmp_path, "old", [entity("Q142", "France"), *DISTRACTORS], "--kinds", "label")
    view = index / "views" / "string"  # a mel.index.v1 folder, as older mel versions wrote them
    source = write_jsonl(tmp_path / "in.jsonl", [doc("d", "France won.", ("France", None))])
    result = run("link", source, "--index", view)
    assert result.exit_code == 0, result.output
    assert "single-view index" in result.stderr
    assert json.loads(result.stdout.splitlines()[0])["mentions"][0]["qid"] == "Q142"


def test_a_mention_written_as_an_acronym_gets_the_entities_of_those_initials(default_model, tmp_path):
    kb = [entity("Q145", "United Kingdom"), entity("Q1330725", "UK"), entity("Q204711", "Food and Drug Administration"),
          *DISTRACTORS]
    index = build(tmp_path, "acronyms", kb)
    (record,) = link(index, tmp_path, [doc("d", "The U.K. and the FDA agreed in Paris.", ("U.K.", None), ("FDA", None),
                                           ("Paris", None))], "--explain")
    uk, fda, paris = ({c["qid"]: c for c in m["candidates"]} for m in record["mentions"])
    assert "initials" in uk["Q145"]["views"] and uk["Q145"]["features"]["acronym"] == 1
    assert uk["Q1330725"]["features"]["acronym"] == 0  # the entity labelled "UK" is no acronym of a name
    assert "initials" in fda["Q204711"]["views"] and fda["Q204711"]["features"]["acronym"] == 1
    assert all("initials" not in c["views"] and c["features"]["acronym"] == 0 for c in paris.values())
    assert (index / "tables" / "initials" / "manifest.json").is_file()
    # An index built before initials tables existed makes the map from its name table: same records.
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["tables"].remove("initials")
    del manifest["parts"]["tables/initials"]
    (index / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(index / "tables" / "initials")
    older = link(index, tmp_path, [doc("d", "The U.K. and the FDA agreed in Paris.", ("U.K.", None), ("FDA", None),
                                       ("Paris", None))], "--explain")
    assert older == [record]


def test_encoding_on_its_own_stage_links_the_same(default_model, tmp_path, monkeypatch):
    # On CUDA the linker's encoder runs as a pipeline stage of its own; here it is forced on CPU.
    from mel.linker.ranker import FusedLinker

    kb = [entity("Q142", "France", "country in Europe"), entity("Q183", "Germany", "country in Europe"),
          *DISTRACTORS]
    index = build(tmp_path, "staged", kb, "--kinds", "label,description")
    records = [doc(f"d{i}", "Paris is the capital of France, Berlin that of Germany.",
                   ("Paris", None), ("France", None), ("Berlin", None), ("Germany", None)) for i in range(3)]
    plain = link(index, tmp_path, records, "--explain")
    staged_calls = []

    def stage(self):
        def encode(prepared):
            staged_calls.append(len(prepared.spans))
            return self.encode(prepared)
        return encode

    monkeypatch.setattr(FusedLinker, "encode_stage", property(stage))
    assert link(index, tmp_path, records, "--explain") == plain
    assert sum(staged_calls) == 12  # every mention went through the encoder stage


def test_tune_names_the_gold_file_without_linkable_mentions_and_why(default_model, tmp_path):
    index = build(tmp_path, "plain", DISTRACTORS)
    gold = write_jsonl(tmp_path / "gold.jsonl", [doc("g", "Paris again.", ("Paris", "Q90"))])
    gold.write_text(gold.read_text().replace('"Q90"', '"90"'))
    result = run("index", "tune", index, "--gold", gold, "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"mel: error: {gold}: no linkable gold mentions to tune on (skipped 1 (mention 1: field 'qid' is not a "
        f"Wikidata item id: '90'); first: {gold}:1: mention 1: field 'qid' is not a Wikidata item id: '90')")
    assert not (index / "reranker.json").exists()


def test_a_marked_pronoun_is_linked_as_its_antecedent(default_model, tmp_path):
    kb = [entity("Q7324052", "Rico Lebrun", "Italian-American painter"), entity("Q65", "Los Angeles"),
          entity("Q560", "helium", "chemical element", aliases=("He",)), *DISTRACTORS]
    index = build(tmp_path, "pronouns", kb)
    text = "Rico Lebrun moved to Los Angeles in 1938. He taught painting there, and his students admired him."
    english = doc("en", text, ("Rico Lebrun", None), ("Los Angeles", None), ("He", None), ("his", None),
                  ("him", None))
    unlisted = {**english, "id": "ja", "lang": "ja"}  # no pronoun list: "He" is linked as written
    linked = link(index, tmp_path, [english, unlisted], "--explain")
    assert [m["qid"] for m in linked[0]["mentions"]] == ["Q7324052", "Q65", "Q7324052", "Q7324052", "Q7324052"]
    assert linked[1]["mentions"][2]["qid"] == "Q560"
    flagged = [{c["features"]["pronoun"] for c in m["candidates"]} for m in linked[0]["mentions"]]
    assert flagged == [{0}, {0}, {1}, {1}, {1}]  # the reranker knows which mentions were looked up as another
    assert {c["features"]["pronoun"] for c in linked[1]["mentions"][2]["candidates"]} == {0}
