import importlib.util
import lzma
from pathlib import Path

import pytest
import zstandard

from mel.damuel import (
    DESCRIPTION_CHARS,
    DamuelPart,
    best_description_language,
    choose_description_languages,
    find_damuel_parts,
    language_of_folder,
)
from mel.errors import InputError
from mel.kb import JsonlKB, open_kb, read_kb, read_training_mentions, training_mentions_from_documents
from mel.records import KBEntity, TrainingMention
from mel.skips import SkipReport
from mel.streams import JsonlWriter

DATA = Path(__file__).resolve().parents[1] / "data"
DAMUEL_ES = DATA / "damuel" / "es"
DAMUEL_DE = DATA / "damuel" / "de"


def _fixture_maker():
    spec = importlib.util.spec_from_file_location("make_fixtures", DATA / "make_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKER = _fixture_maker()


def test_committed_fixtures_match_the_generator(tmp_path):
    MAKER.write_fixtures(tmp_path)
    for made in sorted(p for p in tmp_path.rglob("*") if p.is_file()):
        committed = DATA / made.relative_to(tmp_path)
        assert committed.is_file(), committed
        if made.suffix == ".xz":
            assert lzma.decompress(made.read_bytes()) == lzma.decompress(committed.read_bytes()), committed
        else:
            assert made.read_bytes() == committed.read_bytes(), committed


def test_damuel_part_entities():
    part = DamuelPart(DAMUEL_ES)
    assert part.lang == "es"
    assert [p.name for p in part.files] == ["part-00000.xz", "part-00001.xz"]
    report = SkipReport()
    entities = {e.qid: e for e in part.entities(report=report)}
    assert list(entities) == ["Q90", "Q142", "Q5", "Q64", "Q183"]
    paris = entities["Q90"]
    assert paris.lang == "es" and paris.label == "París" and paris.has_page
    assert paris.description.startswith("París es la capital de Francia.")  # the page's start
    assert paris.wikidata_description == "capital de Francia"
    assert paris.page_title == "París" and paris.page_text is None
    human = entities["Q5"]
    assert not human.has_page and human.description == "especie de mamífero"
    assert report.total_skipped == 0


def test_long_pages_are_cut_for_the_description(tmp_path):
    page = "palabra " * 2000
    _write_part(tmp_path / "es", [MAKER.damuel_entity("Q1", "Uno", "desc", page)])
    (entity,) = DamuelPart(tmp_path / "es").entities(keep_page_text=True)
    assert len(entity.description) <= DESCRIPTION_CHARS
    assert page.startswith(entity.description)
    assert entity.page_text == page


def test_page_title_stands_in_for_a_missing_label(tmp_path):
    _write_part(tmp_path / "es", [MAKER.damuel_entity("Q7", None, None, "Texto de la página.", title="Título")])
    (entity,) = DamuelPart(tmp_path / "es").entities()
    assert entity.label == "Título" and entity.description == "Texto de la página."


def test_filters_require_page_and_limit():
    report = SkipReport()
    with_page = [e.qid for e in DamuelPart(DAMUEL_ES).entities(require_page=True, report=report)]
    assert with_page == ["Q90", "Q142", "Q64"]
    assert report.filtered["entity without a Wikipedia page (require_page)"] == 2
    assert [e.qid for e in DamuelPart(DAMUEL_ES).entities(limit=2)] == ["Q90", "Q142"]
    assert [e.qid for e in read_kb([DAMUEL_ES], limit=4)] == ["Q90", "Q142", "Q5", "Q64"]


def test_training_mentions_from_links():
    report = SkipReport()
    mentions = list(DamuelPart(DAMUEL_ES).training_mentions(report=report))
    assert [(m.qid, m.mention) for m in mentions] == [
        ("Q142", "Francia"),
        ("Q1471", "Sena"),
        ("Q90", "París"),
        ("Q183", "Alemania"),
        ("Q183", "Alemania"),
    ]
    sena = mentions[1]
    # after an astral character: offsets are code points of the page text
    assert sena.text.index("🗼") < sena.start == sena.text.index("Sena")
    assert sena.origin == "wiki" and sena.lang == "es"
    assert sena.source.endswith("damuel/es/part-00000.xz:1")
    assert mentions[4].source.endswith("part-00001.xz:1")
    assert report.filtered == {"link with origin 'damuel' (not selected)": 1, "link without a qid": 1}


def test_training_mentions_of_all_origins():
    mentions = list(DamuelPart(DAMUEL_ES).training_mentions(origins=None))
    added = [m for m in mentions if m.origin != "wiki"]
    assert [(m.qid, m.mention, m.origin) for m in added] == [("Q13917", "Île-de-France", "damuel")]
    assert len(list(DamuelPart(DAMUEL_ES).training_mentions(limit=2))) == 2


def _write_part(folder: Path, entities, extra_lines=(), name="part-00000.xz", compress=lzma.compress):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [MAKER._line(e).encode() for e in entities] + list(extra_lines)
    (folder / name).write_bytes(compress(b"\n".join(lines) + b"\n"))


def _malformed_part(tmp_path):
    good = MAKER.damuel_entity("Q1", "Uno", "primero", "Uno y Dos.", links=[("Dos", "Q2", "wiki")])
    bad_link = MAKER.damuel_entity("Q3", "Tres", None, "Tres y Cuatro.", links=[("Cuatro", "Q4", "wiki")])
    bad_link["wiki"]["links"][0]["end"] = 99
    bad_qid_link = MAKER.damuel_entity("Q5", "Cinco", None, "Cinco y Seis.", links=[("Seis", "X6", "wiki")])
    lines = [
        b'{"qid": "Q10", "label": "broken',  # line 4
        b'{"label": "no qid"}',  # line 5
        b'{"qid": "P31", "label": "instance of"}',  # line 6
        b'{"qid": "Q11", "label": ""}',  # line 7
        b"[1, 2]",  # line 8
        b'{"qid": "Q12", "label": "caf\xe9"}',  # line 9
        b"",  # line 10: blank, not a record
        MAKER._line(MAKER.damuel_entity("Q13", "Trece", "último")).encode(),  # line 11
    ]
    _write_part(tmp_path / "es", [good, bad_link, bad_qid_link], lines)
    return DamuelPart(tmp_path / "es")


def test_malformed_lines_are_counted_with_file_and_line(tmp_path):
    part = _malformed_part(tmp_path)
    report = SkipReport(max_examples=20)
    assert [e.qid for e in part.entities(report=report)] == ["Q1", "Q3", "Q5", "Q13"]
    assert report.skipped == {
        "not valid JSON": 1,
        "missing field 'qid'": 1,
        "not a Wikidata item id": 1,
        "empty label": 1,
        "not a JSON object": 1,
        "invalid UTF-8": 1,
    }
    file = str(part.files[0])
    assert f"{file}:4: not valid JSON" in report.examples[0]
    assert report.examples[2] == f"{file}:6: not a Wikidata item id ('P31')"
    assert report.examples[3] == f"{file}:7: empty label"

    links = SkipReport(max_examples=20)
    assert [(m.qid, m.mention) for m in part.training_mentions(report=links)] == [("Q2", "Dos")]
    assert links.skipped["link token span 2-99 outside the page's 4 tokens"] == 1
    assert links.skipped["link qid is not a Wikidata item id"] == 1
    assert f"{file}:2: link token span 2-99 outside the page's 4 tokens (link 1)" in links.examples


def test_strict_mode_raises_at_the_first_malformed_line(tmp_path):
    part = _malformed_part(tmp_path)
    with pytest.raises(InputError, match=r"part-00000\.xz:4: not valid JSON"):
        list(part.entities(report=SkipReport(strict=True)))


def test_parts_are_recognised_by_content(tmp_path):
    entity = MAKER.damuel_entity("Q1", "Uno", "primero")
    _write_part(tmp_path / "plain", [entity], name="part-0", compress=lambda b: b)
    _write_part(tmp_path / "zstd", [entity], name="part-1.xz", compress=zstandard.ZstdCompressor().compress)
    for folder in ("plain", "zstd"):
        assert [e.label for e in DamuelPart(tmp_path / folder, lang="es").entities()] == ["Uno"]


def test_language_of_folder(tmp_path):
    assert language_of_folder(Path("damuel/es")) == "es"
    assert language_of_folder(Path("damuel_1.0_pt-br")) == "pt-br"
    assert language_of_folder(Path("damuel_1.0_de")) == "de"
    assert language_of_folder(Path("mydata")) == "mydata"
    assert DamuelPart(DAMUEL_ES, lang="xx").lang == "xx"


def test_jsonl_kb():
    report = SkipReport()
    entities = list(JsonlKB(DATA / "kb.jsonl").entities(report=report))
    assert [e.qid for e in entities] == ["Q90", "Q142", "Q64", "Q183", "Q1490"]
    assert entities[0] == KBEntity("Q90", "en", "Paris", "capital of France", ("City of Light",))
    assert entities[4].label == "東京都"
    assert [e.qid for e in JsonlKB(DATA / "kb.jsonl").entities(langs={"de", "ja"}, report=report)] == ["Q183", "Q1490"]
    assert report.filtered["entity in language 'en' (not selected)"] == 3


def test_jsonl_kb_zst_round_trip_and_to_json(tmp_path):
    entities = list(DamuelPart(DAMUEL_ES).entities())
    path = tmp_path / "kb.jsonl.zst"
    with JsonlWriter(path) as writer:
        for entity in entities:
            writer.write(entity.to_json())
    assert list(open_kb(path).entities()) == entities
    assert [e.qid for e in read_kb([path], require_page=True)] == ["Q90", "Q142", "Q64"]


def test_jsonl_kb_malformed_lines(tmp_path):
    path = tmp_path / "kb.jsonl"
    path.write_text(
        '{"qid": "Q1", "lang": "en", "label": "One"}\n'
        '{"qid": "Q2", "label": "no language"}\n'
        '{"qid": "Q3", "lang": "en", "label": "Three", "aliases": "not a list"}\n'
        '{"qid": "Q4", "lang": "en", "label": "   "}\n'
        '{"qid": "Q5", "lang": "en", "label": "Five", "description": null}\n'
    )
    report = SkipReport()
    assert [(e.qid, e.description) for e in JsonlKB(path).entities(report=report)] == [("Q1", ""), ("Q5", "")]
    assert report.skipped == {
        "missing field 'lang'": 1,
        "field 'aliases' must be a list of strings": 1,
        "empty label": 1,
    }
    assert [e.lang for e in JsonlKB(path, default_lang="fr").entities()] == ["en", "fr", "en"]
    with pytest.raises(InputError, match=r"kb\.jsonl:2: missing field 'lang'"):
        list(JsonlKB(path).entities(report=SkipReport(strict=True)))


def test_open_kb_decides_by_what_the_path_is(tmp_path):
    assert isinstance(open_kb(DAMUEL_ES), DamuelPart)
    assert isinstance(open_kb(DATA / "kb.jsonl"), JsonlKB)
    assert isinstance(open_kb("-"), JsonlKB)
    with pytest.raises(InputError, match="not found"):
        open_kb(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="without part-\\* files"):
        open_kb(tmp_path)


def test_find_damuel_parts(tmp_path):
    root = DATA / "damuel"
    assert [p.lang for p in find_damuel_parts(root)] == ["de", "es"]
    assert [p.lang for p in find_damuel_parts(root, langs={"es"})] == ["es"]
    assert [p.lang for p in find_damuel_parts(DAMUEL_ES)] == ["es"]
    with pytest.raises(InputError, match="no DaMuEL part for language\\(s\\) fr"):
        find_damuel_parts(root, langs={"es", "fr"})
    with pytest.raises(InputError, match="neither a DaMuEL language folder"):
        find_damuel_parts(tmp_path)


def test_training_mentions_from_documents():
    report = SkipReport()
    mentions = list(training_mentions_from_documents(DATA / "docs.jsonl", report=report))
    assert [(m.qid, m.mention, m.lang) for m in mentions] == [
        ("Q90", "París", "es"),
        ("Q142", "Francia", "es"),
        ("Q90", "Paris", "en"),
    ]
    assert mentions[0].origin == "documents" and mentions[0].source.endswith("docs.jsonl:1")
    assert report.filtered["document mention without a gold qid"] == 6
    bad = SkipReport()
    assert list(training_mentions_from_documents(DATA / "docs_bad.jsonl", report=bad)) == []
    assert bad.total_skipped == len(MAKER.DOCS_BAD)


def test_read_training_mentions_from_damuel_and_documents():
    report = SkipReport()
    mentions = list(read_training_mentions([DATA / "damuel", DATA / "docs.jsonl"], report=report))
    assert [m.lang for m in mentions] == ["de"] * 3 + ["es"] * 5 + ["es", "es", "en"]
    assert {m.origin for m in mentions} == {"wiki", "documents"}
    only_es = list(read_training_mentions([DATA / "damuel", DATA / "docs.jsonl"], langs={"es"}, limit=6))
    assert [m.lang for m in only_es] == ["es"] * 6 and only_es[-1].origin == "documents"


def test_training_mention_json_round_trip():
    mention = next(DamuelPart(DAMUEL_ES).training_mentions())
    assert TrainingMention.from_json(mention.to_json()) == mention


# --- one description per entity across languages --------------------------------


def test_best_description_language_rule():
    totals = {"de": 50, "en": 30, "fr": 30}
    # the target language wins whenever the entity is there
    assert best_description_language(["de", "es"], {"de": 9}, totals, target_lang="es") == "es"
    # otherwise the most training mentions of the entity
    assert best_description_language(["de", "fr"], {"de": 1, "fr": 2}, totals, target_lang="es") == "fr"
    # ties: the language with more mentions in total
    assert best_description_language(["en", "de"], {"de": 1, "en": 1}, totals) == "de"
    assert best_description_language(["en", "de"], {}, totals) == "de"
    # still tied: the alphabetically first code, whatever the order given
    assert best_description_language(["fr", "en"], {"fr": 2, "en": 2}, totals) == "en"
    with pytest.raises(ValueError):
        best_description_language([], {}, totals)


def _language_parts(tmp_path):
    """Three languages: de has 5 training links, en and fr 3 each.

    QA: en, fr (1 link each, totals tie) -> en (alphabetical)
    QB: de, en (no links)                -> de (larger total)
    QC: de (1 link), fr (2 links)         -> fr (most links)
    QD: de, en, es                        -> es when it is the target
    """
    def page(qid, links):
        words = " ".join(surface for surface, _ in links)
        return MAKER.damuel_entity(qid, "Página", None, words + ".", links=[(s, q, "wiki") for s, q in links])

    de = [
        MAKER.damuel_entity("Q2", "B-de", "b de"),
        MAKER.damuel_entity("Q3", "C-de", "c de"),
        MAKER.damuel_entity("Q4", "D-de", "d de"),
        page("Q901", [("cc", "Q3"), ("xa", "Q99"), ("xb", "Q99"), ("xc", "Q99"), ("xd", "Q99")]),
    ]
    en = [
        MAKER.damuel_entity("Q1", "A-en", "a en"),
        MAKER.damuel_entity("Q2", "B-en", "b en"),
        MAKER.damuel_entity("Q4", "D-en", "d en"),
        page("Q902", [("aa", "Q1"), ("ya", "Q98"), ("yb", "Q98")]),
    ]
    fr = [
        MAKER.damuel_entity("Q1", "A-fr", "a fr"),
        MAKER.damuel_entity("Q3", "C-fr", "c fr"),
        page("Q903", [("a1", "Q1"), ("c1", "Q3"), ("c2", "Q3")]),
    ]
    es = [MAKER.damuel_entity("Q4", "D-es", "d es")]
    for lang, entities in (("de", de), ("en", en), ("fr", fr), ("es", es)):
        _write_part(tmp_path / lang, entities)
    return {lang: DamuelPart(tmp_path / lang) for lang in ("de", "en", "es", "fr")}


def test_choose_description_languages_follows_the_rule(tmp_path):
    parts = _language_parts(tmp_path)
    choice = choose_description_languages(list(parts.values()), target_lang="es")
    assert choice.lang_totals["de"] == 5 and choice.lang_totals["en"] == 3 and choice.lang_totals["fr"] == 3
    assert {q: choice.language_of(q) for q in ("Q1", "Q2", "Q3", "Q4")} == {
        "Q1": "en", "Q2": "de", "Q3": "fr", "Q4": "es",
    }
    # the streaming choice agrees with the rule applied to full counts
    counts: dict[str, dict[str, int]] = {}
    presence: dict[str, list[str]] = {}
    for lang, part in parts.items():
        for entity in part.entities():
            presence.setdefault(entity.qid, []).append(lang)
        for mention in part.training_mentions():
            counts.setdefault(mention.qid, {}).setdefault(lang, 0)
            counts[mention.qid][lang] += 1
    for qid, langs in presence.items():
        expected = best_description_language(langs, counts.get(qid, {}), choice.lang_totals, "es")
        assert choice.language_of(qid) == expected, qid
    # with no target, QD goes to the larger total
    assert choose_description_languages(list(parts.values())).language_of("Q4") == "de"


def test_read_kb_gives_each_entity_once(tmp_path):
    _language_parts(tmp_path)
    report = SkipReport()
    entities = list(read_kb([tmp_path], target_lang="es", report=report))
    by_qid = {e.qid: e for e in entities}
    assert len(by_qid) == len(entities)
    assert {q: (e.lang, e.label) for q, e in by_qid.items() if q in ("Q1", "Q2", "Q3", "Q4")} == {
        "Q1": ("en", "A-en"), "Q2": ("de", "B-de"), "Q3": ("fr", "C-fr"), "Q4": ("es", "D-es"),
    }
    # 12 entries in all, 7 distinct entities
    assert len(entities) == 7 and report.filtered["entity described in another language"] == 5
    only = list(read_kb([tmp_path], langs={"en", "fr"}, target_lang="fr"))
    assert {e.qid: e.lang for e in only if e.qid in ("Q1", "Q2", "Q3", "Q4")} == {
        "Q1": "fr", "Q2": "en", "Q3": "fr", "Q4": "en",
    }


def test_read_kb_fixture_languages():
    es_first = {e.qid: e.lang for e in read_kb([DAMUEL_ES, DAMUEL_DE], target_lang="es")}
    assert es_first == {"Q90": "es", "Q142": "es", "Q5": "es", "Q64": "es", "Q183": "es", "Q1726": "de"}
    de_first = {e.qid: e.lang for e in read_kb([DATA / "damuel"], target_lang="de")}
    assert de_first == {"Q64": "de", "Q183": "de", "Q1726": "de", "Q90": "es", "Q142": "es", "Q5": "es"}


def test_read_kb_reports_bad_lines_once_over_two_passes(tmp_path):
    _malformed_part(tmp_path)
    _write_part(tmp_path / "de", [MAKER.damuel_entity("Q1", "Eins", "erstes")])
    report = SkipReport()
    entities = list(read_kb([tmp_path / "es", tmp_path / "de"], target_lang="de", report=report))
    assert sorted((e.qid, e.lang) for e in entities) == [("Q1", "de"), ("Q13", "es"), ("Q3", "es"), ("Q5", "es")]
    assert report.skipped["not valid JSON"] == 1
    # bad links only lower the counts of the first pass
    assert report.filtered["malformed training link (not counted)"] == 2
    with pytest.raises(InputError, match="es/part-00000.xz:4: not valid JSON"):
        list(read_kb([tmp_path / "es", tmp_path / "de"], report=SkipReport(strict=True)))


def test_read_kb_mixes_damuel_and_jsonl(tmp_path):
    entities = list(read_kb([DAMUEL_ES, DATA / "kb.jsonl"], langs={"es", "ja"}))
    assert [e.qid for e in entities] == ["Q90", "Q142", "Q5", "Q64", "Q183", "Q1490"]
    assert [e.qid for e in read_kb([DAMUEL_ES, DATA / "kb.jsonl"], limit=6)][-1] == "Q90"
