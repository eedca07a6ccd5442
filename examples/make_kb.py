"""Builds examples/kb.jsonl (mel KB JSON Lines) from the hand-written sources in examples/src/.

    python examples/make_kb.py            # writes examples/kb.jsonl

Sources (plain text, UTF-8, one block per entity):

    @Q142 country weu          <- QID, kind, argument (region key, or the country QID)
    en France | | French Republic
    de Frankreich
    ...

Each language line is `lang label | description | alias; alias | short name`;
only the label is required. Where the description is left empty, countries,
capitals and cities get one from the templates below (built from the region or
from the country's own labels, so "capital of France" and "Hauptstadt
Frankreichs" stay consistent with the country's entry); every other kind must
give its description. The short name, when given, is what the templates use
instead of the label ("China" rather than "People's Republic of China").

Only the standard library is used, so the file can be remade anywhere.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = [HERE / "src" / "kb-places.txt", HERE / "src" / "kb-entities.txt"]
OUTPUT = HERE / "kb.jsonl"
LANGS = ("ar", "de", "en", "es", "fa", "ja", "sr", "ta", "tr")
TEMPLATED_KINDS = {"country", "capital", "city"}

# Region phrases per language, already in the form the country template needs
# (German and Serbian take a case, Tamil and Turkish a locative suffix).
REGIONS: dict[str, dict[str, str]] = {
    "weu": dict(en="Western Europe", de="in Westeuropa", es="de Europa Occidental", ar="غرب أوروبا", fa="اروپای غربی", ja="西ヨーロッパ", sr="у Западној Европи", ta="மேற்கு ஐரோப்பாவில்", tr="Batı Avrupa'da"),
    "eeu": dict(en="Eastern Europe", de="in Osteuropa", es="de Europa Oriental", ar="شرق أوروبا", fa="اروپای شرقی", ja="東ヨーロッパ", sr="у Источној Европи", ta="கிழக்கு ஐரோப்பாவில்", tr="Doğu Avrupa'da"),
    "seu": dict(en="Southern Europe", de="in Südeuropa", es="del sur de Europa", ar="جنوب أوروبا", fa="اروپای جنوبی", ja="南ヨーロッパ", sr="у Јужној Европи", ta="தெற்கு ஐரோப்பாவில்", tr="Güney Avrupa'da"),
    "neu": dict(en="Northern Europe", de="in Nordeuropa", es="del norte de Europa", ar="شمال أوروبا", fa="اروپای شمالی", ja="北ヨーロッパ", sr="у Северној Европи", ta="வடக்கு ஐரோப்பாவில்", tr="Kuzey Avrupa'da"),
    "ceu": dict(en="Central Europe", de="in Mitteleuropa", es="de Europa Central", ar="وسط أوروبا", fa="اروپای مرکزی", ja="中央ヨーロッパ", sr="у Средњој Европи", ta="மத்திய ஐரோப்பாவில்", tr="Orta Avrupa'da"),
    "was": dict(en="Western Asia", de="in Westasien", es="de Asia Occidental", ar="غرب آسيا", fa="غرب آسیا", ja="西アジア", sr="у Западној Азији", ta="மேற்கு ஆசியாவில்", tr="Batı Asya'da"),
    "eas": dict(en="East Asia", de="in Ostasien", es="de Asia Oriental", ar="شرق آسيا", fa="شرق آسیا", ja="東アジア", sr="у Источној Азији", ta="கிழக்கு ஆசியாவில்", tr="Doğu Asya'da"),
    "sas": dict(en="South Asia", de="in Südasien", es="del sur de Asia", ar="جنوب آسيا", fa="جنوب آسیا", ja="南アジア", sr="у Јужној Азији", ta="தெற்கு ஆசியாவில்", tr="Güney Asya'da"),
    "sea": dict(en="Southeast Asia", de="in Südostasien", es="del Sudeste Asiático", ar="جنوب شرق آسيا", fa="جنوب شرق آسیا", ja="東南アジア", sr="у Југоисточној Азији", ta="தென்கிழக்கு ஆசியாவில்", tr="Güneydoğu Asya'da"),
    "cas": dict(en="Central Asia", de="in Zentralasien", es="de Asia Central", ar="آسيا الوسطى", fa="آسیای میانه", ja="中央アジア", sr="у Средњој Азији", ta="மத்திய ஆசியாவில்", tr="Orta Asya'da"),
    "naf": dict(en="North Africa", de="in Nordafrika", es="del norte de África", ar="شمال أفريقيا", fa="شمال آفریقا", ja="北アフリカ", sr="у Северној Африци", ta="வட ஆப்பிரிக்காவில்", tr="Kuzey Afrika'da"),
    "waf": dict(en="West Africa", de="in Westafrika", es="de África Occidental", ar="غرب أفريقيا", fa="غرب آفریقا", ja="西アフリカ", sr="у Западној Африци", ta="மேற்கு ஆப்பிரிக்காவில்", tr="Batı Afrika'da"),
    "eaf": dict(en="East Africa", de="in Ostafrika", es="de África Oriental", ar="شرق أفريقيا", fa="شرق آفریقا", ja="東アフリカ", sr="у Источној Африци", ta="கிழக்கு ஆப்பிரிக்காவில்", tr="Doğu Afrika'da"),
    "saf": dict(en="Southern Africa", de="im südlichen Afrika", es="de África Austral", ar="الجنوب الأفريقي", fa="جنوب آفریقا", ja="南部アフリカ", sr="у јужној Африци", ta="தெற்கு ஆப்பிரிக்காவில்", tr="Güney Afrika bölgesinde"),
    "caf": dict(en="Central Africa", de="in Zentralafrika", es="de África Central", ar="وسط أفريقيا", fa="آفریقای مرکزی", ja="中部アフリカ", sr="у Централној Африци", ta="மத்திய ஆப்பிரிக்காவில்", tr="Orta Afrika'da"),
    "nam": dict(en="North America", de="in Nordamerika", es="de América del Norte", ar="أمريكا الشمالية", fa="آمریکای شمالی", ja="北アメリカ", sr="у Северној Америци", ta="வட அமெரிக்காவில்", tr="Kuzey Amerika'da"),
    "cam": dict(en="Central America", de="in Mittelamerika", es="de América Central", ar="أمريكا الوسطى", fa="آمریکای مرکزی", ja="中央アメリカ", sr="у Централној Америци", ta="மத்திய அமெரிக்காவில்", tr="Orta Amerika'da"),
    "car": dict(en="the Caribbean", de="in der Karibik", es="del Caribe", ar="البحر الكاريبي", fa="دریای کارائیب", ja="カリブ海", sr="на Карибима", ta="கரிபியனில்", tr="Karayipler'de"),
    "sam": dict(en="South America", de="in Südamerika", es="de América del Sur", ar="أمريكا الجنوبية", fa="آمریکای جنوبی", ja="南アメリカ", sr="у Јужној Америци", ta="தென் அமெரிக்காவில்", tr="Güney Amerika'da"),
    "oce": dict(en="Oceania", de="in Ozeanien", es="de Oceanía", ar="أوقيانوسيا", fa="اقیانوسیه", ja="オセアニア", sr="у Океанији", ta="ஓசியானியாவில்", tr="Okyanusya'da"),
}

# Countries whose name takes an article or a case form the simple rules get wrong.
# English: the name as it reads after "capital of" / "city in".
EN_NAME = {
    "Q30": "the United States", "Q145": "the United Kingdom", "Q55": "the Netherlands",
    "Q928": "the Philippines", "Q878": "the United Arab Emirates", "Q213": "the Czech Republic",
    "Q974": "the Democratic Republic of the Congo", "Q971": "the Republic of the Congo",
    "Q786": "the Dominican Republic",
}
# German: (genitive phrase after "Hauptstadt", phrase after "Stadt").
DE_FORMS = {
    "Q39": ("der Schweiz", "in der Schweiz"), "Q43": ("der Türkei", "in der Türkei"),
    "Q30": ("der Vereinigten Staaten", "in den Vereinigten Staaten"),
    "Q145": ("des Vereinigten Königreichs", "im Vereinigten Königreich"),
    "Q55": ("der Niederlande", "in den Niederlanden"), "Q794": ("des Iran", "im Iran"),
    "Q796": ("des Irak", "im Irak"), "Q822": ("des Libanon", "im Libanon"),
    "Q805": ("des Jemen", "im Jemen"), "Q1049": ("des Sudan", "im Sudan"),
    "Q958": ("des Südsudan", "im Südsudan"), "Q711": ("der Mongolei", "in der Mongolei"),
    "Q214": ("der Slowakei", "in der Slowakei"), "Q212": ("der Ukraine", "in der Ukraine"),
    "Q928": ("der Philippinen", "auf den Philippinen"),
    "Q878": ("der Vereinigten Arabischen Emirate", "in den Vereinigten Arabischen Emiraten"),
    "Q974": ("der Demokratischen Republik Kongo", "in der Demokratischen Republik Kongo"),
    "Q971": ("der Republik Kongo", "in der Republik Kongo"),
    "Q786": ("der Dominikanischen Republik", "in der Dominikanischen Republik"),
    "Q657": ("des Tschad", "im Tschad"), "Q1032": ("des Niger", "im Niger"),
    "Q237": ("der Vatikanstadt", "in der Vatikanstadt"),
    "Q225": ("von Bosnien und Herzegowina", "in Bosnien und Herzegowina"),
}
# Spanish: the phrase after "capital" / "ciudad".
ES_OF = {
    "Q145": "del Reino Unido", "Q55": "de los Países Bajos", "Q878": "de los Emiratos Árabes Unidos",
    "Q974": "de la República Democrática del Congo", "Q971": "de la República del Congo",
    "Q786": "de la República Dominicana", "Q237": "de la Ciudad del Vaticano",
    "Q213": "de la República Checa", "Q822": "del Líbano",
}
# Serbian: (genitive, locative phrase with its preposition) for names the rules in sr_cases() miss;
# islands take "на" (на Тајвану, на Куби).
SR_CASES = {
    "Q30": ("Сједињених Америчких Држава", "у Сједињеним Америчким Државама"),
    "Q145": ("Уједињеног Краљевства", "у Уједињеном Краљевству"),
    "Q884": ("Јужне Кореје", "у Јужној Кореји"), "Q423": ("Северне Кореје", "у Северној Кореји"),
    "Q851": ("Саудијске Арабије", "у Саудијској Арабији"),
    "Q878": ("Уједињених Арапских Емирата", "у Уједињеним Арапским Емиратима"),
    "Q664": ("Новог Зеланда", "у Новом Зеланду"),
    "Q225": ("Босне и Херцеговине", "у Босни и Херцеговини"),
    "Q221": ("Северне Македоније", "у Северној Македонији"), "Q236": ("Црне Горе", "у Црној Гори"),
    "Q258": ("Јужноафричке Републике", "у Јужноафричкој Републици"),
    "Q958": ("Јужног Судана", "у Јужном Судану"),
    "Q974": ("Демократске Републике Конго", "у Демократској Републици Конго"),
    "Q971": ("Републике Конго", "у Републици Конго"),
    "Q786": ("Доминиканске Републике", "у Доминиканској Републици"),
    "Q983": ("Екваторијалне Гвинеје", "у Екваторијалној Гвинеји"),
    "Q691": ("Папуе Нове Гвинеје", "у Папуи Новој Гвинеји"),
    "Q854": ("Шри Ланке", "на Шри Ланки"), "Q238": ("Сан Марина", "у Сан Марину"),
    "Q79": ("Египта", "у Египту"), "Q229": ("Кипра", "на Кипру"), "Q928": ("Филипина", "на Филипинима"),
    "Q865": ("Тајвана", "на Тајвану"), "Q241": ("Кубе", "на Куби"), "Q189": ("Исланда", "на Исланду"),
    "Q233": ("Малте", "на Малти"),
}
# Tamil: (phrase before "தலைநகரம்", phrase before "நகரம்") where "X நாட்டின்" reads badly.
TA_FORMS = {
    "Q30": ("ஐக்கிய அமெரிக்காவின்", "ஐக்கிய அமெரிக்காவிலுள்ள"),
    "Q145": ("ஐக்கிய இராச்சியத்தின்", "ஐக்கிய இராச்சியத்திலுள்ள"),
    "Q878": ("ஐக்கிய அரபு அமீரகத்தின்", "ஐக்கிய அரபு அமீரகத்திலுள்ள"),
    "Q213": ("செக் குடியரசின்", "செக் குடியரசிலுள்ள"),
    "Q974": ("காங்கோ மக்களாட்சிக் குடியரசின்", "காங்கோ மக்களாட்சிக் குடியரசிலுள்ள"),
    "Q971": ("காங்கோ குடியரசின்", "காங்கோ குடியரசிலுள்ள"),
    "Q786": ("டொமினிக்கன் குடியரசின்", "டொமினிக்கன் குடியரசிலுள்ள"),
    "Q41": ("கிரேக்க நாட்டின்", "கிரேக்க நாட்டிலுள்ள"),
    "Q837": ("நேபாள நாட்டின்", "நேபாள நாட்டிலுள்ள"),
}
# Turkish: (genitive, locative) where vowel harmony or a compound noun needs help.
TR_CASES = {
    "Q837": ("Nepal'in", "Nepal'de"),
    "Q30": ("Amerika Birleşik Devletleri'nin", "Amerika Birleşik Devletleri'nde"),
    "Q878": ("Birleşik Arap Emirlikleri'nin", "Birleşik Arap Emirlikleri'nde"),
    "Q258": ("Güney Afrika Cumhuriyeti'nin", "Güney Afrika Cumhuriyeti'nde"),
    "Q974": ("Demokratik Kongo Cumhuriyeti'nin", "Demokratik Kongo Cumhuriyeti'nde"),
    "Q971": ("Kongo Cumhuriyeti'nin", "Kongo Cumhuriyeti'nde"),
    "Q786": ("Dominik Cumhuriyeti'nin", "Dominik Cumhuriyeti'nde"),
    "Q983": ("Ekvator Ginesi'nin", "Ekvator Ginesi'nde"),
    "Q229": ("Kıbrıs Cumhuriyeti'nin", "Kıbrıs Cumhuriyeti'nde"),
}


@dataclass
class Entity:
    qid: str
    kind: str
    arg: str
    source: str
    line: int
    # lang -> (label, description, aliases, short name)
    langs: dict[str, tuple[str, str, list[str], str]] = field(default_factory=dict)


def fail(where: str, message: str) -> None:
    sys.exit(f"{where}: {message}")


def parse(path: Path) -> list[Entity]:
    entities: list[Entity] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        where = f"{path.name}:{number}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            head = line[1:].split()
            if len(head) not in (2, 3) or not head[0].startswith("Q") or not head[0][1:].isdigit():
                fail(where, f"expected '@QID kind [argument]', got {line!r}")
            entities.append(Entity(head[0], head[1], head[2] if len(head) == 3 else "", path.name, number))
            continue
        if not entities:
            fail(where, "language line before the first '@QID' line")
        lang, _, rest = line.partition(" ")
        if lang not in LANGS:
            fail(where, f"unknown language {lang!r} (expected one of {', '.join(LANGS)})")
        parts = [part.strip() for part in rest.split("|")]
        if len(parts) > 4 or not parts[0]:
            fail(where, "expected 'lang label | description | alias; alias | short name'")
        parts += [""] * (4 - len(parts))
        label, description, aliases, short = parts
        entity = entities[-1]
        if lang in entity.langs:
            fail(where, f"{entity.qid} has a second {lang!r} line")
        alias_list = [alias.strip() for alias in aliases.split(";") if alias.strip()]
        entity.langs[lang] = (label, description, alias_list, short)
    return entities


def tr_cases(name: str) -> tuple[str, str]:
    """Turkish genitive and locative of a proper name (apostrophe, vowel harmony,
    consonant assimilation), e.g. Fransa -> Fransa'nın, Fransa'da; Irak -> Irak'ın, Irak'ta."""
    vowels = [ch for ch in name.lower() if ch in "aıoueiöü"]
    last_vowel = vowels[-1] if vowels else "e"
    ends_in_vowel = name[-1].lower() in "aıoueiöü"
    genitive_vowel = {"a": "ı", "ı": "ı", "o": "u", "u": "u", "e": "i", "i": "i", "ö": "ü", "ü": "ü"}[last_vowel]
    genitive = ("n" if ends_in_vowel else "") + genitive_vowel + "n"
    locative_vowel = "a" if last_vowel in "aıou" else "e"
    locative = ("t" if name[-1].lower() in "çfhkpsşt" else "d") + locative_vowel
    return f"{name}'{genitive}", f"{name}'{locative}"


def sr_cases(name: str) -> tuple[str, str]:
    """Serbian genitive and locative of a one-word country name."""
    if " " in name:
        raise ValueError(f"Serbian name {name!r} needs an entry in SR_CASES")
    if name.endswith(("ска", "чка", "шка", "цка")):  # adjectival: Француска, Немачка
        return name[:-1] + "е", name[:-1] + "ој"
    if name.endswith("ка"):  # Доминика -> у Доминици
        return name[:-1] + "е", name[:-2] + "ци"
    if name.endswith("а"):
        return name[:-1] + "е", name[:-1] + "и"
    if name.endswith("о"):  # Мексико -> Мексика, у Мексику
        return name[:-1] + "а", name[:-1] + "у"
    return name + "а", name + "у"  # Јапан -> Јапана, у Јапану; Перу -> Перуа, у Перуу


def country_forms(country: Entity) -> dict[str, dict[str, str]]:
    """Per language: the country's name in the forms the capital and city templates need."""
    forms: dict[str, dict[str, str]] = {}
    for lang, (label, _, _, short) in country.langs.items():
        name = short or label
        q = country.qid
        if lang == "en":
            of = EN_NAME.get(q, name)
            forms[lang] = {"capital": f"capital of {of}", "city": f"city in {of}"}
        elif lang == "de":
            default_gen = f"von {name}" if name[-1] in "sßxz" else f"{name}s"
            gen, loc = DE_FORMS.get(q, (default_gen, f"in {name}"))
            forms[lang] = {"capital": f"Hauptstadt {gen}", "city": f"Stadt {loc}"}
        elif lang == "es":
            of = ES_OF.get(q, f"de {name}")
            forms[lang] = {"capital": f"capital {of}", "city": f"ciudad {of}"}
        elif lang == "ar":
            forms[lang] = {"capital": f"عاصمة {name}", "city": f"مدينة في {name}"}
        elif lang == "fa":
            forms[lang] = {"capital": f"پایتخت {name}", "city": f"شهری در {name}"}
        elif lang == "ja":
            forms[lang] = {"capital": f"{name}の首都", "city": f"{name}の都市"}
        elif lang == "sr":
            if q in SR_CASES:
                gen, loc = SR_CASES[q]
            else:
                gen, loc = sr_cases(name)
                loc = f"у {loc}"
            forms[lang] = {"capital": f"главни град {gen}", "city": f"град {loc}"}
        elif lang == "ta":
            of, in_ = TA_FORMS.get(q, (f"{name} நாட்டின்", f"{name} நாட்டிலுள்ள"))
            forms[lang] = {"capital": f"{of} தலைநகரம்", "city": f"{in_} நகரம்"}
        elif lang == "tr":
            gen, loc = TR_CASES.get(q) or tr_cases(name)
            forms[lang] = {"capital": f"{gen} başkenti", "city": f"{loc} bir şehir"}
    return forms


def country_description(lang: str, region: str) -> str:
    phrase = REGIONS[region][lang]
    return {
        "en": f"country in {phrase}", "de": f"Staat {phrase}", "es": f"país {phrase}",
        "ar": f"دولة في {phrase}", "fa": f"کشوری در {phrase}", "ja": f"{phrase}の国",
        "sr": f"држава {phrase}", "ta": f"{phrase} உள்ள நாடு", "tr": f"{phrase} bir ülke",
    }[lang]


def build(entities: list[Entity]) -> list[dict]:
    by_qid: dict[str, Entity] = {}
    for entity in entities:
        where = f"{entity.source}:{entity.line}"
        if entity.qid in by_qid:
            fail(where, f"{entity.qid} appears twice")
        by_qid[entity.qid] = entity
    records: list[dict] = []
    for entity in entities:
        where = f"{entity.source}:{entity.line}"
        forms: dict[str, dict[str, str]] = {}
        if entity.kind in ("capital", "city"):
            country = by_qid.get(entity.arg)
            if country is None or country.kind != "country":
                fail(where, f"{entity.qid}: {entity.arg!r} is not a country in the sources")
            forms = country_forms(country)
        if entity.kind == "country" and entity.arg not in REGIONS:
            fail(where, f"{entity.qid}: unknown region {entity.arg!r}")
        for lang in LANGS:
            if lang not in entity.langs:
                continue
            label, description, aliases, _ = entity.langs[lang]
            if not description:
                if entity.kind == "country":
                    description = country_description(lang, entity.arg)
                elif entity.kind in ("capital", "city") and lang in forms:
                    description = forms[lang][entity.kind]
                else:
                    fail(where, f"{entity.qid} {lang}: a {entity.kind} needs a description"
                         + (" (its country has no label in this language)" if entity.kind in TEMPLATED_KINDS else ""))
            aliases = [alias for alias in dict.fromkeys(aliases) if alias != label]
            records.append({"qid": entity.qid, "lang": lang, "label": label,
                            "description": description, "aliases": aliases})
    return records


def main() -> None:
    entities = [entity for source in SOURCES for entity in parse(source)]
    records = build(entities)
    with OUTPUT.open("w", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUTPUT.relative_to(HERE.parent)}: {len({r['qid'] for r in records})} entities, "
          f"{len(records)} lines", file=sys.stderr)


if __name__ == "__main__":
    main()
