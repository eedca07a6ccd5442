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
