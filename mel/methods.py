"""`--method`: which ranker answers, opened with the checks that keep each method honest.

- linker (the default): the fused linker over every view and table of an index
  (mel.linker), scores are calibrated probabilities;
- biencoder: the index's context view (or the one view of an older index) as built;
- labels, olpeat: the string view, queried with the mention string alone;
- alias, fuzzy: an alias table (`--aliases`, or the index's own).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mel.aliases import AliasTable
from mel.errors import InputError
from mel.linker.features import FEATURES
from mel.linker.folder import LinkerIndex, is_linker_index, table_path, view_path
from mel.linker.model import read_reranker
from mel.linker.ranker import open_linker
from mel.rankers import AliasRanker, FuzzyRanker, Ranker, RetrieverRanker
from mel.retrieval import EncoderSettings, Retriever, check_model, model_for_index

METHODS = ("linker", "biencoder", "alias", "fuzzy", "olpeat", "labels")
DEFAULT_METHOD = "linker"
INDEX_METHODS = ("linker", "biencoder", "olpeat", "labels")
ALIAS_METHODS = ("alias", "fuzzy")


def open_ranker(method: str, *, index: str | None = None, aliases: str | None = None,
                encoder: EncoderSettings = EncoderSettings(), exact: bool = False,
                allow_model_mismatch: bool = False, announce: Callable[[str], None] | None = None,
                explain: bool = False, verify: bool = True) -> Ranker:
    """The ranker for `--method` over `--index` and/or `--aliases`; `verify=False` skips the
    index's checksums (--no-verify)."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method in ALIAS_METHODS:
        return _alias_ranker(method, index, aliases, encoder, announce)
    if index is None:
        raise InputError(f"--method {method} needs --index")
    if aliases is not None:
        raise InputError(f"--aliases is for --method {' or '.join(ALIAS_METHODS)}; --method {method} searches --index")
    folder = Path(index)
    notes: list[str] = []
    if is_linker_index(folder):
        linker_index = LinkerIndex.open(folder)
        if method == "linker":
            return _linker(linker_index, encoder, exact, allow_model_mismatch, announce, explain, verify)
        view = "string" if method in ("olpeat", "labels") else "context"
        if view not in linker_index.view_folders:
            if method != "biencoder":
                raise InputError(f"--method {method} searches the string view, which {index} does not have "
                                 "(build it with --kinds label)")
            view = "string"
            notes.append(f"{index} has no context view: --method biencoder searches its string view")
        ranker = _view_ranker(method, view_path(folder, view), index, encoder, exact, allow_model_mismatch, announce,
                              notes, verify)
        ranker.links_table = linker_index.tables.get("aliases")
        return ranker
    if method == "linker":
        notes.append(f"{index} is a single-view index (built before the fused linker): its view is searched as built; "
                     "rebuild it with `mel index build` for the linker")
        method = "biencoder"
    return _view_ranker(method, folder, index, encoder, exact, allow_model_mismatch, announce, notes, verify)


def _linker(linker_index: LinkerIndex, encoder: EncoderSettings, exact: bool, allow_model_mismatch: bool,
            announce, explain: bool, verify: bool) -> Ranker:
    manifest = linker_index.manifest
    assert manifest is not None
    model = encoder.open(model_for_index(linker_index.folder, manifest.model, encoder.model, announce))
    reranker = read_reranker(linker_index.reranker_path, FEATURES)
    linker = open_linker(linker_index, model, reranker, exact=exact, threads=encoder.threads, explain=explain,
                         verify=verify)
    dims = [view.dim for view in (linker.string, linker.context) if view is not None]
    check_model(linker_index.folder, manifest.model, dims, model, allow_model_mismatch)
    if linker_index.reranker_path is None:
        linker.notes.append("untuned: the default reranker shipped with mel (`mel index tune` fits one to your data)")
    return linker


def _view_ranker(method: str, view_folder: Path, index: str, encoder: EncoderSettings, exact: bool,
                 allow_model_mismatch: bool, announce, notes: list[str], verify: bool) -> RetrieverRanker:
    retriever = Retriever.open(view_folder, encoder, exact=exact, allow_model_mismatch=allow_model_mismatch,
                               announce=announce, verify=verify, verify_folder=index)
    encoding = retriever.query_encoding
    sources = retriever.index.manifest.extra.get("sources") or {}
    from_aliases = bool(sources.get("aliases"))
    if method in ("olpeat", "labels") and encoding != "string":
        raise InputError(
            f"--method {method} queries with the mention string alone, but {index} is queried with mentions "
            f"in context (query encoding {encoding!r}); build a label index: "
            + ("`mel index build --aliases ALIASES --kinds label`" if method == "olpeat"
               else "`mel index build --kb KB --kinds label`"))
    if method == "biencoder" and encoding == "string":
        notes.append(f"{index} is a label index: mentions are queried by their string alone, without context "
                     f"({'OLPEAT' if from_aliases else 'labels'} baseline)")
    if method == "olpeat" and not from_aliases:
        notes.append(f"{index} was not built from an alias table (mel index build --aliases): "
                     "this measures entity labels, not OLPEAT")
    if method in ("olpeat", "biencoder") and any(not t.get("cased", True) for t in sources.get("aliases") or []):
        notes.append(f"{index} embeds an uncased alias table: its strings are lower-case, mention strings are not")
    if method == "labels" and from_aliases:
        notes.append(f"{index} was built from an alias table: this measures OLPEAT, not entity labels")
    return RetrieverRanker(retriever, name=method, entry_order_ties=method == "olpeat", notes=notes)


def _alias_ranker(method: str, index: str | None, aliases: str | None, encoder: EncoderSettings,
                  announce) -> Ranker:
    notes: list[str] = []
    if aliases is None and index is not None and is_linker_index(index):
        tables = LinkerIndex.open(index).tables
        name = "aliases" if "aliases" in tables else "names"
        if name not in tables:
            raise InputError(f"--method {method}: {index} has no alias table (build it with --links)")
        if name == "names":
            notes.append(f"{index} has no alias table from training links: its KB name table is looked up")
        aliases = str(table_path(Path(index), name))
    elif aliases is None:
        raise InputError(f"--method {method} needs --aliases (an alias table from `mel alias build`) or a linker index")
    elif index is not None:
        raise InputError(f"--method {method} looks mentions up in --aliases; --index is for {', '.join(INDEX_METHODS)}")
    table = AliasTable.open(aliases)
    ranker: AliasRanker = AliasRanker(table) if method == "alias" else FuzzyRanker(table, workers=encoder.threads or -1)
    ranker.notes.extend(notes)
    return ranker
