"""Alias tables: counting links per (alias, QID), the on-disk format, lookups, the CLI, OLPEAT indexes."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from mel.aliases import AliasSettings, AliasTable, build_alias_table, normalize_alias
from mel.cli import main
from mel.errors import ArtifactError, InputError
from mel.records import KBEntity
from mel.skips import SkipReport

DATA = "tests/data"


def write_docs(path, mentions):
    """mel documents, one a mention: (surface, qid, lang)."""
    with open(path, "w", encoding="utf-8") as out:
        for number, (surface, qid, lang) in enumerate(mentions):
            text = f"x {surface} y"
            record = {"id": f"t{number}", "lang": lang, "text": text,
                      "mentions": [{"start": 2, "end": 2 + len(surface), "qid": qid}]}
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


TRAINING = [("Granada", "Q8810", "es")] * 3 + [("Granada", "Q769", "es")] + [
    ("París", "Q90", "es"), ("París", "Q90", "es"), ("París", "Q167646", "es"),
    ("Francia", "Q142", "es"), ("francia", "Q142", "es"), ("Alemania", "Q183", "es"),
    ("Deutschland", "Q183", "es"), ("España", "Q29", "es"), ("  Ciudad de\n México ", "Q1489", "es"),
]


def test_counts_per_alias_and_qid_from_damuel_wiki_links(tmp_path):
    report = SkipReport()
    manifest = build_alias_table(tmp_path / "a", [f"{DATA}/damuel/es"], report=report)
    table = AliasTable.open(tmp_path / "a")
    # The fixture's wiki-origin links: Francia, Sena, París, Alemania x2 (its "damuel" link is left out).
    assert table.strings() == ["Alemania", "Francia", "París", "Sena"]
    assert table.lookup("Alemania") == [("Q183", 2)]
    assert table.lookup("París") == [("Q90", 1)]
    assert table.lookup("Paris") == [] and table.lookup("francia") == [] and table.lookup("Île-de-France") == []
    assert manifest["counts"] == {"mentions": 5, "aliases": 4, "pairs": 4, "pairs_before_top_k": 4, "qids": 4,
                                  "mentions_by_language": {"es": 5}}
    assert report.filtered["link with origin 'damuel' (not selected)"] == 1
    assert manifest["languages"] == ["es"] and manifest["format"] == "mel.aliases.v1"
    source = manifest["sources"][0]
    assert source["kind"] == "damuel" and source["lang"] == "es" and len(source["files"]) == 2
    assert all(len(digest) == 64 for digest in source["files"].values())
    assert manifest["settings"]["cased"] is True and manifest["settings"]["origins"] == ["wiki"]
    assert set(manifest["files"]) == {"aliases.utf8", "alias_offsets.npy", "pair_offsets.npy", "qids.npy",
                                      "counts.npy", "qid_set.npy", "qid_alias_offsets.npy",
                                      "qid_alias_rows.npy", "link_sketch.npy"}
    assert manifest["link_sketch"]["mentions"] == 5  # the wiki-origin links counted, each fingerprinted
    assert list(table.contains(np.array([90, 142, 183, 1471, 64]))) == [True, True, True, True, False]

    everything = build_alias_table(tmp_path / "all", [f"{DATA}/damuel/es"], AliasSettings(all_origins=True))
    assert everything["counts"]["mentions"] == 6 and everything["settings"]["origins"] == "all"
    assert AliasTable.open(tmp_path / "all").lookup("Île-de-France") == [("Q13917", 1)]


def test_top_k_order_case_and_whitespace(tmp_path):
    docs = write_docs(tmp_path / "train.jsonl", TRAINING)
    build_alias_table(tmp_path / "cased", [str(docs)])
    cased = AliasTable.open(tmp_path / "cased")
    assert cased.lookup("Granada") == [("Q8810", 3), ("Q769", 1)]  # by count, not by QID
    assert cased.lookup("París") == [("Q90", 2), ("Q167646", 1)]
    assert cased.lookup("Francia") == [("Q142", 1)] and cased.lookup("francia") == [("Q142", 1)]
    # whitespace runs collapse, in the table and in lookups
    assert cased.lookup("Ciudad de México") == [("Q1489", 1)] == cased.lookup(" Ciudad  de\tMéxico")

    build_alias_table(tmp_path / "uncased", [str(docs)], AliasSettings(cased=False, top_k=1))
    uncased = AliasTable.open(tmp_path / "uncased")
    assert uncased.lookup("FRANCIA") == [("Q142", 2)]
    assert uncased.lookup("granada") == [("Q8810", 3)]  # top-k 1 keeps the most linked
    assert uncased.manifest["counts"]["pairs"] < uncased.manifest["counts"]["pairs_before_top_k"]
    assert normalize_alias("  A\u00a0 b\x00c ", cased=False) == "a bc"


def test_spilled_runs_give_the_same_table(tmp_path):
    rng = random.Random(3)
    alphabet = "abcñé日本\U0001d4ab \x01"
    mentions = [("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6))) or "z", f"Q{rng.randint(1, 40)}", "es")
                for _ in range(600)]
    docs = write_docs(tmp_path / "train.jsonl", mentions)
    build_alias_table(tmp_path / "memory", [str(docs)])
    build_alias_table(tmp_path / "spilled", [str(docs)], flush_pairs=7)
    for name in ("aliases.utf8", "alias_offsets.npy", "pair_offsets.npy", "qids.npy", "counts.npy", "qid_set.npy"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "spilled" / name).read_bytes(), name
    # Every lookup agrees with counting in a dict.
    expected: dict[str, dict[str, int]] = {}
    for surface, qid, _ in mentions:
        alias = normalize_alias(surface)
        if alias:
            expected.setdefault(alias, {}).setdefault(qid, 0)
            expected[alias][qid] += 1
    table = AliasTable.open(tmp_path / "spilled")
    assert table.strings() == sorted(expected)
    for alias, counts in expected.items():
        ranked = sorted(counts.items(), key=lambda item: (-item[1], int(item[0][1:])))
        assert table.lookup(alias) == ranked
        assert table.find(alias + "~") == -1


def test_bad_sources_and_damaged_tables(tmp_path):
    with pytest.raises(InputError, match="no training mentions"):
        build_alias_table(tmp_path / "empty", [f"{DATA}/docs_bad.jsonl"])
    assert not (tmp_path / "empty").exists()
    build_alias_table(tmp_path / "a", [f"{DATA}/damuel/es"])
    with pytest.raises(ArtifactError, match="already exists"):
        build_alias_table(tmp_path / "a", [f"{DATA}/damuel/es"])
    build_alias_table(tmp_path / "a", [f"{DATA}/damuel/es"], force=True)
    (tmp_path / "a" / "qids.npy").write_bytes((tmp_path / "a" / "qids.npy").read_bytes()[:-8])
    with pytest.raises(ArtifactError, match=r"qids.npy: \d+ bytes, the manifest says \d+ \(the file is damaged\)"):
        AliasTable.open(tmp_path / "a")
    with pytest.raises(ArtifactError, match="not an alias table"):
        (tmp_path / "idx").mkdir()
        (tmp_path / "idx" / "manifest.json").write_text('{"format": "mel.index.v1"}')
        AliasTable.open(tmp_path / "idx")


def test_cli_build_info_lookup(tmp_path):
    docs = write_docs(tmp_path / "train.jsonl", TRAINING)
    runner = CliRunner()
    out = tmp_path / "aliases"
    built = runner.invoke(main, ["alias", "build", "--kb", f"{DATA}/damuel/es", "--kb", str(docs), "-o", str(out),
                                 "--top-k", "5"])
    assert built.exit_code == 0, built.output
    assert "aliases" in built.output and "left out 1: link with origin 'damuel'" in built.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert isinstance(manifest["command"], str) and manifest["tool_versions"]["mel"]
    assert [s["kind"] for s in manifest["sources"]] == ["damuel", "documents"]
    assert manifest["settings"]["top_k"] == 5
    info = runner.invoke(main, ["alias", "info", str(out)])
    assert info.exit_code == 0 and "Alias table" in info.output
    assert json.loads(runner.invoke(main, ["alias", "info", str(out), "--json"]).output)["counts"]["aliases"] == 9
    found = runner.invoke(main, ["alias", "lookup", str(out), "París", "nada"])
    lines = [json.loads(line) for line in found.output.splitlines()]
    assert lines[0]["candidates"] == [{"qid": "Q90", "count": 3}, {"qid": "Q167646", "count": 1}]
    assert lines[1]["candidates"] == []
    again = runner.invoke(main, ["alias", "build", "--kb", str(docs), "-o", str(out)])
    assert again.exit_code == 1 and "already exists" in again.output


def test_label_index_of_alias_strings(tiny_model, tmp_path):
    """`mel index build --aliases`: one label entry per (alias, QID) pair, most linked first."""
    from mel.indexes.searcher import Index

    docs = write_docs(tmp_path / "train.jsonl", TRAINING)
    build_alias_table(tmp_path / "aliases", [str(docs)])
    runner = CliRunner()
    out = tmp_path / "olpeat"
    built = runner.invoke(main, ["index", "build", "--aliases", str(tmp_path / "aliases"), "--model", str(tiny_model),
                                 "-o", str(out), "-q", "--exact"])
    assert built.exit_code == 0, built.output
    manifest = json.loads((out / "views" / "string" / "manifest.json").read_text())
    assert manifest["query_encoding"] == "string"
    assert manifest["counts"]["by_kind"] == {"label": 10}  # 8 aliases, two with 2 QIDs
    assert manifest["sources"]["aliases"][0]["cased"] is True
    index = Index(out / "views" / "string")
    entries = [index.entry(i) for i in range(len(index))]
    granada = [(e.qid, e.label) for e in entries if e.label == "Granada"]
    assert granada == [("Q8810", "Granada"), ("Q769", "Granada")]
    assert {e.lang for e in entries} == {"es"}
    vectors = index.vectors(np.array([i for i, e in enumerate(entries) if e.label == "Granada"]))
    assert np.array_equal(vectors[0], vectors[1])  # one string, encoded once
    wrong = runner.invoke(main, ["index", "build", "--aliases", str(tmp_path / "aliases"), "--kinds", "description",
                                 "--kb", f"{DATA}/kb.jsonl", "--model", str(tiny_model), "-o", str(tmp_path / "x")])
    assert wrong.exit_code == 1 and "--aliases gives label entries" in wrong.output


def test_the_inverse_index_gives_each_qids_aliases(tmp_path):
    from mel.aliases import count_aliases

    pairs = [("Paris", 90, "en"), ("París", 90, "es"), ("Paris", 167646, "en"), ("Ville Lumière", 90, "fr")]
    count_aliases(tmp_path / "t", iter(pairs), AliasSettings(), sources=[], report=SkipReport())
    table = AliasTable.open(tmp_path / "t")
    assert sorted(table.alias(int(r)) for r in table.alias_rows_of_qid(90)) == ["Paris", "París", "Ville Lumière"]
    assert [table.alias(int(r)) for r in table.alias_rows_of_qid(167646)] == ["Paris"]
    assert len(table.alias_rows_of_qid(5)) == 0


def test_loose_keys_join_words_broken_at_a_line_end_by_ocr():
    assert normalize_alias("Kon¬ stantinopel", loose=True) == normalize_alias("Konstantinopel", loose=True)
    assert normalize_alias("Bundes\u00adversammlung", loose=True) == "bundesversammlung"  # soft hyphen
    assert normalize_alias("Kon¬ stantinopel") == "Kon¬ stantinopel"  # exact keys keep what was written


def test_a_loose_name_table_folds_case_accents_and_punctuation(tmp_path):
    from mel.aliases import build_name_table

    assert normalize_alias("SÃO-Paulo!", loose=True) == "sao paulo"
    entities = [KBEntity("Q174", "pt", "São Paulo", aliases=("Sampa",)), KBEntity("Q174", "en", "Sao Paulo"),
                KBEntity("Q1", "en", "sao paulo FC")]
    build_name_table(tmp_path / "n", iter(entities), source={"kb": "test"})
    table = AliasTable.open(tmp_path / "n")
    assert table.lookup("SAO PAULO") == [("Q174", 2)]  # two records name it
    assert table.lookup("sampa") == [("Q174", 1)] and table.lookup("São Paulo FC") == [("Q1", 1)]


def test_alias_build_with_nothing_to_count_says_what_was_skipped(tmp_path):
    links = tmp_path / "links.jsonl"
    links.write_text("not json\n")
    result = CliRunner().invoke(main, ["alias", "build", "--links", str(links), "-o", str(tmp_path / "a"), "-q"])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("mel: error: no training mentions in the sources (skipped 1 (not valid JSON")
    assert f"{links}:1" in line and line.endswith(": nothing to count") and not (tmp_path / "a").exists()
