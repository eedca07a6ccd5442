"""The training links' fingerprints that an alias table keeps, the gold fingerprints a reranker keeps
(mel.link_sketch), and what they tell."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mel.aliases import AliasTable, build_alias_table
from mel.errors import ArtifactError
from mel.link_sketch import SKETCH_FILE, WINDOW, LinkSketch, SketchBuilder, mention_fingerprint, sketch_json


def test_a_fingerprint_depends_on_the_entity_the_place_and_the_words_around():
    text = "In 1990 Paris hosted the summit; Paris then went quiet."
    first = mention_fingerprint(text, 8, 13, 90)
    assert first == mention_fingerprint(text, 8, 13, 90)
    assert 0 <= first < 2**64
    others = {mention_fingerprint(text, 8, 13, 167646), mention_fingerprint(text, 33, 38, 90),
              mention_fingerprint(text.replace("1990", "1991"), 8, 13, 90)}
    assert first not in others and len(others) == 3
    # Only WINDOW code points either side count: a change far away keeps the fingerprint.
    far = text + " " + "x" * 300
    assert mention_fingerprint(far + "!", 8, 13, 90) == mention_fingerprint(far + "?", 8, 13, 90)


def sketch_of(values: list[int], capacity: int, folder) -> LinkSketch:
    builder = SketchBuilder(capacity)
    for value in values:
        builder.add(value)
    return LinkSketch.open(folder, builder.write(folder))


def test_under_its_capacity_the_sketch_holds_every_link_and_counts_exactly(tmp_path):
    sketch = sketch_of([5, 3, 9, 3, 7], capacity=10, folder=tmp_path)
    assert sketch.fingerprints.tolist() == [3, 5, 7, 9] and not sketch.full
    overlap = sketch.overlap(np.array([3, 4, 9, 2**63], dtype=np.uint64))
    assert (overlap.mentions, overlap.checked, overlap.found) == (4, 4, 2) and overlap.share == 0.5


def test_past_its_capacity_the_smallest_fingerprints_estimate_the_share(tmp_path):
    rng = np.random.default_rng(0)
    links = rng.integers(0, 2**63, size=50_000, dtype=np.uint64)
    sketch = sketch_of(links.tolist(), capacity=2_000, folder=tmp_path)
    assert sketch.full and len(sketch.fingerprints) == 2_000
    assert sketch.fingerprints.tolist() == np.sort(links)[:2_000].tolist()
    gold = np.concatenate([rng.choice(links, 10_000, replace=False),
                           rng.integers(0, 2**63, size=10_000, dtype=np.uint64)])
    overlap = sketch.overlap(gold)
    assert overlap.mentions == 20_000 and 600 < overlap.checked < 1_000
    assert overlap.share == pytest.approx(0.5, abs=0.08)
    assert sketch.overlap(rng.integers(0, 2**63, size=5_000, dtype=np.uint64)).found == 0
    # Counted in parts (as `mel eval` counts each chunk of documents), the overlaps add up.
    assert sketch.overlap(gold[:7_000]) + sketch.overlap(gold[7_000:]) == overlap


def test_a_table_of_training_links_keeps_their_sketch_and_checks_it(tmp_path):
    links = tmp_path / "links.jsonl"
    docs = [{"id": f"d{i}", "lang": "en", "text": f"Story {i} about Paris.",
             "mentions": [{"start": len(f"Story {i} about "), "end": len(f"Story {i} about Paris"), "qid": "Q90"}]}
            for i in range(4)]
    links.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    manifest = build_alias_table(tmp_path / "a", [str(links)])
    assert manifest["link_sketch"]["mentions"] == 4 and SKETCH_FILE in manifest["files"]
    table = AliasTable.open(tmp_path / "a")
    start = len("Story 2 about ")
    sketch = table.link_sketch()
    assert sketch is not None
    assert sketch.overlap(np.array([mention_fingerprint(docs[2]["text"], start, start + 5, 90)],
                                   dtype=np.uint64)).found == 1
    np.save(tmp_path / "a" / SKETCH_FILE, sketch.fingerprints[::-1].copy())  # same size, out of order
    with pytest.raises(ArtifactError, match="not a link sketch"):
        AliasTable.open(tmp_path / "a").link_sketch()
    np.save(tmp_path / "a" / SKETCH_FILE, sketch.fingerprints.astype(np.int64))
    with pytest.raises(ArtifactError, match="not a link sketch"):
        AliasTable.open(tmp_path / "a").link_sketch()


def test_a_reranker_gold_sketch_goes_through_json_and_is_checked():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True)
    gold[-1] = 2**64 - 1  # past what a float (and some JSON readers) keeps exactly
    data = json.loads(json.dumps(sketch_json(np.concatenate([gold, gold[:10]]), capacity=100)))
    assert data["mentions"] == 310 and data["window"] == WINDOW and len(data["fingerprints"]) == 100
    sketch = LinkSketch.from_json(data, "reranker.json")
    assert sketch.full and sketch.fingerprints.tolist() == np.sort(gold)[:100].tolist()
    assert sketch.overlap(gold).found == sketch.overlap(gold).checked > 0
    small = LinkSketch.from_json(sketch_json(gold, capacity=1000), "reranker.json")
    assert not small.full and small.overlap(gold[:50]).found == 50
    assert small.overlap(np.array([7], np.uint64)).found == 0
    # Fingerprints of another window cannot be compared: no sketch, and no error.
    assert LinkSketch.from_json({**data, "window": WINDOW + 1}, "reranker.json") is None
    for bad, why in (({**data, "fingerprints": data["fingerprints"][::-1]}, "not a gold sketch"),
                     ({**data, "fingerprints": ["zz"]}, "unreadable gold sketch"),
                     ({**data, "capacity": 10}, "not a gold sketch"),
                     ({**data, "capacity": 0, "fingerprints": []}, "not a gold sketch"),
                     ({k: v for k, v in data.items() if k != "mentions"}, "unreadable gold sketch"),
                     ("sketch", "unreadable gold sketch")):
        with pytest.raises(ArtifactError, match=why):
            LinkSketch.from_json(bad, "reranker.json")
