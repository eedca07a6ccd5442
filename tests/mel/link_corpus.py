"""A tiny-model label index and a ~2,000-document corpus with bad and blank lines, shared by the
sharded, Python API and Ray link tests; and record comparison within a score tolerance."""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from mel.cli import main
from tests.conftest import TINY_WORDS

KB = [(f"Q{100 + i}", word) for i, word in enumerate(TINY_WORDS)]
# Plain, sharded and Ray runs encode in different batches; fp32 and the static int8 variant (the CPU
# default) embed a text the same in any batch up to float rounding (about 1e-7: the padding length
# changes the order of sums, and so does the batch size itself: texts of one length embedded 7 or
# 64 at a time differ too). A reranker tree whose split falls inside that rounding moves a
# probability by its leaf's small share (2e-6 seen with depth-3 trees, 3e-5 and 2.6e-4 with two
# fits of depth 4), so records agree within 1e-3, fused linker included. (With a batch-dependent
# variant, a near-tie at the edge of a view's top 30 could move the linker's probabilities by a
# few 1e-3: the bound was 1e-2.)
LINKER_TOL = 1e-3


def build_label_index(model: Path, folder: Path) -> Path:
    kb = folder / "kb.jsonl"
    kb.write_text("".join(json.dumps({"qid": q, "lang": "en", "label": w, "description": f"the {w}"}) + "\n"
                          for q, w in KB))
    result = CliRunner().invoke(main, ["index", "build", "--kb", str(kb), "--kinds", "label", "--model", str(model),
                                       "-o", str(folder / "idx"), "-q"])
    assert result.exit_code == 0, result.output
    return folder / "idx"


def corpus_lines(documents: int, seed: int = 0) -> list[bytes]:
    """`documents` documents of 1-3 mentions; a bad line every 97 and a blank line every 131."""
    rng = random.Random(seed)
    lines = []
    for i in range(documents):
        words = [rng.choice(TINY_WORDS) for _ in range(rng.randint(4, 9))]
        text = " ".join(words)
        starts = [len(" ".join(words[:j])) + (1 if j else 0) for j in range(len(words))]
        picks = sorted(rng.sample(range(len(words)), rng.randint(1, 3)))
        mentions = [{"start": starts[j], "end": starts[j] + len(words[j])} for j in picks]
        lines.append(json.dumps({"id": f"d{i}", "lang": "en", "text": text, "mentions": mentions}).encode())
        if i % 97 == 5:
            lines.append(b'{"id": "bad", "text": "unterminated')
        if i % 131 == 7:
            lines.append(b"")
        if i % 211 == 9:
            bad_span = {"id": f"span{i}", "text": "short", "mentions": [{"start": 3, "end": 30}]}
            lines.append(json.dumps(bad_span).encode())
    return lines


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def read_records(path: Path) -> list[dict]:
    from mel.streams import iter_lines

    return [json.loads(line) for _, line in iter_lines(path) if line.strip()]


def assert_same_records(got: list[dict], want: list[dict], tol: float) -> None:
    """Record for record: every field equal; per mention the same QID and candidates, scores within `tol`
    (candidates whose scores tie within `tol` may swap places)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        if "error" in a or "error" in b:
            assert a == b
            continue
        strip = lambda r: {k: v for k, v in r.items() if k != "mentions"}  # noqa: E731
        assert strip(a) == strip(b)
        assert len(a.get("mentions", [])) == len(b.get("mentions", []))
        for m, n in zip(a.get("mentions", []), b.get("mentions", [])):
            assert {k: v for k, v in m.items() if k not in ("qid", "score", "candidates")} == \
                {k: v for k, v in n.items() if k not in ("qid", "score", "candidates")}
            assert abs(m["score"] - n["score"]) <= tol
            scores_a = {c["qid"]: c["score"] for c in m["candidates"]}
            scores_b = {c["qid"]: c["score"] for c in n["candidates"]}
            assert len(scores_a) == len(scores_b)
            floor = min(scores_b.values())
            for qid, score in scores_a.items():
                assert abs(score - scores_b.get(qid, floor)) <= tol, (qid, m, n)
            if m["qid"] != n["qid"]:
                assert abs(scores_b[n["qid"]] - scores_a.get(n["qid"], -1)) <= tol
