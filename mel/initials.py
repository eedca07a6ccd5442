"""Acronyms: mentions written as one ("UK", "S.F."), the initials of the KB's names, and the
initials table (an alias table, format mel.aliases.v1) that maps the one to the other.

`mel index build` writes `tables/initials` beside the name table: each loosely normalised
name of two or more words gives its initials ("united kingdom" -> "uk"; "food and drug
administration" -> "fada" and, skipping the small words, "fda"), and the table maps them to
the name's entities (a pair's count: how many of the entity's names have those initials).
The linker looks an acronym mention up in it, as it looks a mention up in the name table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from mel.aliases import AliasSettings, AliasTable, count_aliases, normalize_alias
from mel.skips import SkipReport

# Words an acronym may skip ("FDA": Food and Drug Administration); names are loosely normalised.
ACRONYM_SKIPS = frozenset(
    "a an and at by de del der des di die du el et for in la le les of on the to und von y".split())
_ACRONYM_NOISE = re.compile(r"[.\s#()&'’]")
UNKNOWN_LANGUAGE = "und"  # the name table keeps no language per name


def acronym_key(text: str) -> str:
    """The letters of a mention written as an acronym ("UK", "S.F.", "WoW": 2 to 6 letters, at least
    two of them capitals), loosely normalised as names are ("ÉU" -> "eu"); "" for any other mention."""
    letters = _ACRONYM_NOISE.sub("", text)
    if not 2 <= len(letters) <= 6 or not letters.isalpha() or sum(c.isupper() for c in letters) < 2:
        return ""
    return normalize_alias(letters, loose=True)


def name_initials(name: str) -> set[str]:
    """The acronyms a loosely normalised name of two or more words can have: the initials of
    every word, and of every word but the small ones (ACRONYM_SKIPS)."""
    words = name.split()
    if len(words) < 2:
        return set()
    found = {"".join(w[0] for w in words), "".join(w[0] for w in words if w not in ACRONYM_SKIPS)}
    return {key for key in found if 2 <= len(key) <= 6}


def initials_of_rows(names: AliasTable) -> Iterator[tuple[int, set[str]]]:
    """(row, its initials) for each name of a name table that has initials."""
    for row, name in enumerate(names.strings()):
        keys = name_initials(name)
        if keys:
            yield row, keys


def build_initials_table(out: str | os.PathLike, names: AliasTable, *, force: bool = False) -> dict:
    """The initials table of a name table (written at `out`, empty when no name has initials)."""
    def pairs() -> Iterator[tuple[str, int, str]]:
        for row, keys in initials_of_rows(names):
            qids = names.qids_of(row).tolist()
            for key in sorted(keys):
                for qid in qids:
                    yield key, qid, UNKNOWN_LANGUAGE

    return count_aliases(out, pairs(), AliasSettings(loose=True, top_k=1_000_000, all_origins=True),
                         sources=[{"table": "names"}], report=SkipReport(), force=force, what="initials",
                         empty_ok=True)
