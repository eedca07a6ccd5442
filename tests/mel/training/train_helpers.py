"""A tiny synthetic KB and mention set in which context decides.

Entities share labels ("mercury" the planet, the element, the song, …) and are
told apart only by their descriptions; a mention's label is ambiguous and one
topic word in its context names the right entity. All words are in the tiny
test vocabulary (tests/conftest.py), so every word is one token.
"""

from __future__ import annotations

import random
from pathlib import Path

import orjson

LABELS = ("mercury", "jordan", "amazon", "java", "apple", "paris")
TOPICS = ("planet", "element", "river", "island", "company", "film", "song", "team", "city", "fruit", "museum",
          "king")
FILLER = ("the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from",
          "country", "president", "queen", "capital")
TOPICS_PER_LABEL = 4


def entities() -> list[dict]:
    out = []
    for i, label in enumerate(LABELS):
        for j in range(TOPICS_PER_LABEL):
            topic = TOPICS[(i * 2 + j) % len(TOPICS)]
            qid = f"Q{100 + i * 10 + j}"
            out.append({"qid": qid, "lang": "en", "label": label, "description": f"the {topic} {label}",
                        "topic": topic})
    return out


def _context(rng: random.Random, label: str, topic: str) -> tuple[str, int, int]:
    left = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    right = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    side = left if rng.random() < 0.5 else right
    side.insert(rng.randint(0, len(side)), topic)
    prefix = " ".join(left) + " "
    text = prefix + label + " " + " ".join(right)
    return text, len(prefix), len(prefix) + len(label)


def documents(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    kb = entities()
    docs = []
    for number in range(n):
        entity = rng.choice(kb)
        text, start, end = _context(rng, entity["label"], entity["topic"])
        docs.append({"id": f"s{seed}-{number}", "lang": "en", "text": text,
                     "mentions": [{"start": start, "end": end, "qid": entity["qid"]}]})
    return docs


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def write_dataset(folder: Path, train: int = 400, held_out: int = 96) -> tuple[Path, Path, Path]:
    """(kb.jsonl, train.jsonl, eval.jsonl) under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    kb = [{k: v for k, v in e.items() if k != "topic"} for e in entities()]
    return (write_jsonl(folder / "kb.jsonl", kb), write_jsonl(folder / "train.jsonl", documents(train, 1)),
            write_jsonl(folder / "eval.jsonl", documents(held_out, 2)))


def fast_settings(kb: Path, links: Path, model: Path, output: Path, **overrides):
    """TrainSettings for a seconds-long CPU run on the synthetic data."""
    from mel.training.settings import TrainSettings

    values = dict(kb=(str(kb),), links=(str(links),), model=str(model), output=str(output), rounds=2,
                  batch_size=8, negatives=3, k=8, steps_first=12, steps=12, lr=3e-3, pooling="mean",
                  precisions=("fp32",), log_every=4, checkpoint_every=5, threads=1, quiet=True, seed=0)
    values.update(overrides)
    return TrainSettings(**values)
