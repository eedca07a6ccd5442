"""Counting what readers skipped and left out, so that nothing is lost silently."""

from __future__ import annotations

import collections

from mel.errors import InputError


class SkipReport:
    """Counts what a reader skipped, so nothing is lost silently.

    `skip()` records a malformed record (counted per reason, the first
    `max_examples` kept as "file:line: reason (detail)"); with `strict` it
    raises InputError instead. `filter()` counts records left out on purpose
    (a language filter, a link origin), which are never errors.
    """

    def __init__(self, *, strict: bool = False, max_examples: int = 10):
        self.strict = strict
        self.max_examples = max_examples
        self.skipped: collections.Counter[str] = collections.Counter()
        self.filtered: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []

    def skip(self, location: str, reason: str, detail: str = "") -> None:
        message = f"{location}: {reason}" + (f" ({detail})" if detail else "")
        if self.strict:
            raise InputError(message)
        self.skipped[reason] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(message)

    def filter(self, reason: str, count: int = 1) -> None:
        self.filtered[reason] += count

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def lines(self) -> list[str]:
        """A human summary, one line each: skipped counts, examples, filtered counts."""
        out = [f"skipped {n} record(s): {reason}" for reason, n in self.skipped.most_common()]
        out += [f"  e.g. {example}" for example in self.examples]
        out += [f"left out {n}: {reason}" for reason, n in self.filtered.most_common()]
        return out

    def summary(self) -> str:
        """One line: what was skipped and left out, with the first example."""
        parts = [f"skipped {n:,} ({reason})" for reason, n in self.skipped.most_common()]
        parts += [f"left out {n:,} ({reason})" for reason, n in self.filtered.most_common()]
        if not parts:
            return "nothing was read"
        return "; ".join(parts) + (f"; first: {self.examples[0]}" if self.examples else "")

    def why(self) -> str:
        """" (what was skipped and left out)" for an error saying nothing usable was left, or ""
        when nothing was: the error is raised before any report is printed, so it carries it."""
        return f" ({self.summary()})" if self.skipped or self.filtered else ""

    def to_json(self) -> dict:
        return {
            "skipped": dict(self.skipped),
            "examples": list(self.examples),
            "filtered": dict(self.filtered),
        }
