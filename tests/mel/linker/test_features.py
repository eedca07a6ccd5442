"""Candidate features that need no model: acronym candidates and the QID-age gap."""

from __future__ import annotations

from mel.aliases import AliasTable
from mel.initials import acronym_key, build_initials_table
from mel.linker.features import MAX_NAME_HITS, InitialsIndex
from tests.conftest import name_table


def table_of(tmp_path, names: list[tuple[str, int]]) -> AliasTable:
    return name_table(tmp_path / "names", names)


def test_the_initials_index_finds_the_entities_an_acronym_stands_for(tmp_path):
    table = table_of(tmp_path, [("United Kingdom", 145), ("University of Kentucky", 1360303), ("UK", 1330725),
                                ("Food and Drug Administration", 204711), ("Paris", 90)])
    initials = InitialsIndex(table)
    assert initials.lookup(acronym_key("U.K."))[1] == [145, 1360303]  # lowest QID first; "UK" itself is one word
    assert initials.lookup(acronym_key("FDA"))[1] == [204711]
    assert initials.lookup(acronym_key("Paris"))[1] == [] and initials.lookup("zz")[1] == []


def test_the_initials_table_gives_what_the_map_made_from_the_names_gives(tmp_path):
    # An index built by this mel looks acronyms up in tables/initials; an older one makes the map
    # from its name table on the first acronym. Both must give every acronym the same entities.
    names = [("United Kingdom", 145), ("University of Kentucky", 1360303), ("Ulster Unionists", 7),
             ("Food and Drug Administration", 204711), ("Fédération Démocratique", 11), ("Paris", 90),
             ("États-Unis", 30), ("Estados Unidos", 30), ("World of Warcraft", 131007)]
    table = table_of(tmp_path, names)
    build_initials_table(tmp_path / "initials", table)
    from_table = InitialsIndex(table, AliasTable.open(tmp_path / "initials"))
    from_names = InitialsIndex(table)
    keys = {"uk", "uou", "uu", "fda", "fada", "fd", "eu", "wow", "ww", "pa", "zz", ""}
    for key in keys:
        assert from_table.lookup(key)[0] == from_names.lookup(key)[0], key
    assert from_table.lookup(acronym_key("ÉU"))[1] == [30]  # accents go as in the names' loose keys
    assert from_table.lookup("fd")[0] == {11} and from_table.lookup(acronym_key("U.K."))[1] == [145, 1360303]


def test_the_initials_index_keeps_at_most_max_name_hits(tmp_path):
    table = table_of(tmp_path, [(f"big {w}", 1000 + i) for i, w in enumerate(f"b{n}" for n in range(80))])
    hits = InitialsIndex(table).lookup("bb")[1]
    assert hits == list(range(1000, 1000 + MAX_NAME_HITS))


def test_qid_gap_compares_ages_among_the_candidates_holding_the_mentions_words():
    import numpy as np

    from mel.linker.features import COLUMN, FEATURES, qid_gap

    # Mention 0: three candidates, two of whose names hold the mention's words; mention 1: none do.
    mention = np.array([0, 0, 0, 1, 1])
    X = np.zeros((5, len(FEATURES)), dtype=np.float32)
    X[:, COLUMN["log_qid"]] = [1.8, 5.7, 0.5, 3.0, 4.0]
    X[:, COLUMN["name_token_set"]] = [1.0, 1.0, 0.6, 0.9, 0.2]
    gap = qid_gap(X, mention, 2)
    assert np.allclose(gap, [0.0, 3.9, -1.0, -1.0, -1.0])


def test_document_features_follow_the_choices_they_are_given():
    import numpy as np

    from mel.linker.features import COLUMN, FEATURES, CandidateRows, document_features, first_choices, mention_slices

    # One document: "Michael Jordan" (mention 0: the player Q41421 or the river Q810) and "Jordan"
    # (mention 1: the same two). The first pass picks the loose name match of each.
    mention = np.array([0, 0, 1, 1])
    qid = np.array([41421, 810, 41421, 810])
    X = np.zeros((4, len(FEATURES)), dtype=np.float32)
    X[:, COLUMN["loose"]] = [1, 0, 0, 1]
    X[:, COLUMN["string_score"]] = [0.9, 0.5, 0.6, 0.9]
    rows = CandidateRows(mention, qid, X, np.zeros(4, np.uint8))
    keys, docs = ["michael jordan", "jordan"], [0, 0]
    vectors = np.eye(4, dtype=np.float32)[[0, 1, 0, 1]]  # each entity's entry vector
    slices = mention_slices(mention, 2)
    assert first_choices(X, mention, 2).tolist() == [0, 3]
    document_features(X, rows, keys, docs, vectors, slices)
    assert X[:, COLUMN["coref_longer"]].tolist() == [0, 0, 1, 0]  # "Jordan" after "Michael Jordan"
    assert X[:, COLUMN["same_top"]].tolist() == [0, 1, 1, 0]
    # Chosen otherwise (say by a reranker's first pass: the river for both), the evidence moves,
    # and nothing of the earlier call is left over.
    document_features(X, rows, keys, docs, vectors, slices, first=np.array([1, 3]))
    assert X[:, COLUMN["coref_longer"]].tolist() == [0, 0, 0, 1]
    assert X[:, COLUMN["same_top"]].tolist() == [0, 1, 0, 1]
    assert X[:, COLUMN["coherence"]].tolist() == [0, 1, 0, 1]
    # A mention alone in its document gets none.
    document_features(X, rows, keys, [0, 1], vectors, slices)
    assert not X[:, [COLUMN["coref_longer"], COLUMN["same_top"], COLUMN["coherence"]]].any()
