"""Acronyms: the mention side, the names' initials, and the initials table built from a name table."""

from __future__ import annotations

import pytest

from mel.aliases import AliasTable, normalize_alias
from mel.initials import acronym_key, build_initials_table, name_initials
from tests.conftest import name_table


@pytest.mark.parametrize("mention,key", [
    ("UK", "uk"), ("S.F.", "sf"), ("WoW", "wow"), ("NFL)", "nfl"), ("#NASA", "nasa"), ("США", "сша"),
    ("ÉU", "eu"), ("Paris", ""), ("ufc", ""), ("U", ""), ("ABCDEFG", ""), ("A1", ""), ("東京", ""), ("", ""),
])
def test_acronym_key_takes_only_mentions_written_as_acronyms(mention, key):
    assert acronym_key(mention) == key


def test_name_initials_with_and_without_the_small_words():
    assert name_initials("united kingdom") == {"uk"}
    assert name_initials("food and drug administration") == {"fada", "fda"}
    assert name_initials("world of warcraft") == {"wow", "ww"}
    assert name_initials("paris") == set()  # one word: no acronym
    assert name_initials("a b c d e f g h") == set()  # longer than any acronym_key


def test_the_initials_table_maps_initials_to_entities_counting_their_names(tmp_path):
    names = name_table(tmp_path / "names", [("United Kingdom", 145), ("Unified Kingdom", 145),
                                             ("United Kingdom", 174193), ("Union Kanal", 9), ("Paris", 90),
                                             ("Food and Drug Administration", 204711)])
    manifest = build_initials_table(tmp_path / "initials", names)
    table = AliasTable.open(tmp_path / "initials")
    # Two of Q145's names give "uk": most names first, then the lowest QID.
    assert table.lookup("uk") == [("Q145", 2), ("Q9", 1), ("Q174193", 1)]
    assert table.lookup("fda") == table.lookup("fada") == [("Q204711", 1)] and table.lookup("pa") == []
    assert table.loose and manifest["counts"]["aliases"] == len(table) == 3
    assert set(manifest["files"]) >= {"aliases.utf8", "qids.npy", "qid_alias_rows.npy"}


def test_a_name_table_without_initials_gives_an_empty_table(tmp_path):
    names = name_table(tmp_path / "names", [("Paris", 90), ("Berlin", 64)])
    build_initials_table(tmp_path / "initials", names)
    table = AliasTable.open(tmp_path / "initials")
    assert len(table) == 0 and table.lookup("pb") == [] and normalize_alias("PB", loose=True) == "pb"
