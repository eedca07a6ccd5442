"""How a training run reports as it goes: phases with a count, and messages.

The loop calls these; the default does nothing. The command line shows them as a
progress bar and lines on stderr (mel.cli.progress.TrainingProgress).
"""

from __future__ import annotations

from collections.abc import Callable


class TrainProgress:
    def phase(self, description: str, total: int | None) -> Callable[[int], None]:
        """A new phase ("round 2/5: training", 100000 steps); returns advance(n)."""
        return lambda n: None

    def message(self, text: str) -> None:
        """A line for the user ("round 1/5: loss 0.4123, R@1 61.0, …")."""
