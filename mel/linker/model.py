"""The reranker: gradient-boosted trees over candidate features, and its calibration, as plain JSON.

A reranker turns each (mention, candidate) row of features into a logit
(`init + rate * sum of tree leaves`; trees fitted by scikit-learn, evaluated here
with NumPy, no scikit-learn needed). A mention's candidates compete in a softmax
with temperature T and a "none of them" logit b:

    p_i = exp(z_i / T) / (exp(b) + sum_j exp(z_j / T))

and the probability is recalibrated per language (Platt: sigmoid(a * logit(p) + c),
fitted on predictions for mentions the trees were not fitted on; "*" for every
other language). The result is the probability that a candidate is the right
entity, so NIL is a threshold on it. No pickle: the file holds the feature list,
the trees as arrays, the calibration and the versions that made it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import orjson

from mel.errors import ArtifactError
from mel.link_sketch import LinkSketch

FORMAT = "mel.reranker.v1"
DEFAULT_FILE = "default-reranker.json"
_LEAF = -1


@dataclass(frozen=True)
class Tree:
    """One regression tree: node arrays as scikit-learn stores them (a leaf has feature -1)."""

    feature: np.ndarray  # int32, per node
    threshold: np.ndarray  # float64: go left when x <= threshold
    left: np.ndarray  # int32 child node, -1 at a leaf
    right: np.ndarray
    value: np.ndarray  # float64 leaf value (raw score)

    def predict(self, X: np.ndarray) -> np.ndarray:
        node = np.zeros(len(X), dtype=np.int64)
        rows = np.arange(len(X))
        for _ in range(len(self.feature)):  # at most the tree's depth iterations do any work
            inner = self.feature[node] != _LEAF
            if not inner.any():
                break
            at = node[inner]
            go_left = X[rows[inner], self.feature[at]] <= self.threshold[at]
            node[inner] = np.where(go_left, self.left[at], self.right[at])
        return self.value[node]

    def to_json(self) -> dict:
        return {"feature": self.feature.tolist(), "threshold": self.threshold.tolist(), "left": self.left.tolist(),
                "right": self.right.tolist(), "value": self.value.tolist()}

    @classmethod
    def from_json(cls, data: dict, features: int, where: str) -> Tree:
        try:
            tree = cls(np.asarray(data["feature"], dtype=np.int32), np.asarray(data["threshold"], dtype=np.float64),
                       np.asarray(data["left"], dtype=np.int32), np.asarray(data["right"], dtype=np.int32),
                       np.asarray(data["value"], dtype=np.float64))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: malformed tree ({exc})") from None
        n = len(tree.feature)
        shapes_ok = n > 0 and all(len(a) == n for a in (tree.threshold, tree.left, tree.right, tree.value))
        inner = tree.feature != _LEAF
        links_ok = shapes_ok and bool(np.all((tree.left[inner] > np.flatnonzero(inner))
                                             & (tree.right[inner] > np.flatnonzero(inner))
                                             & (tree.left[inner] < n) & (tree.right[inner] < n)))
        if not links_ok or np.any((tree.feature < _LEAF) | (tree.feature >= features)) \
                or not np.all(np.isfinite(tree.value)) or not np.all(np.isfinite(tree.threshold[inner])):
            raise ArtifactError(f"{where}: tree arrays are inconsistent (sizes, children or feature numbers)")
        return tree


@dataclass(frozen=True)
class Calibration:
    """Softmax temperature and "none" logit, and Platt scaling (a, c) per language ("*": the rest)."""

    temperature: float = 1.0
    none_logit: float = 0.0
    platt: dict[str, tuple[float, float]] = field(default_factory=lambda: {"*": (1.0, 0.0)})

    def to_json(self) -> dict:
        return {"temperature": self.temperature, "none_logit": self.none_logit,
                "platt": {lang: list(ac) for lang, ac in self.platt.items()}}

    @classmethod
    def from_json(cls, data: dict, where: str) -> Calibration:
        try:
            platt = {str(lang): (float(ac[0]), float(ac[1])) for lang, ac in data["platt"].items()}
            out = cls(float(data["temperature"]), float(data["none_logit"]), platt)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ArtifactError(f"{where}: malformed calibration ({exc})") from None
        numbers = [out.temperature, out.none_logit, *(x for ac in platt.values() for x in ac)]
        if not all(math.isfinite(x) for x in numbers) or out.temperature <= 0 or "*" not in platt \
                or any(a <= 0 for a, _ in platt.values()):
            raise ArtifactError(f"{where}: calibration values out of range (temperature and slopes must be > 0)")
        return out


@dataclass(frozen=True)
class Reranker:
    features: tuple[str, ...]
    init: float
    learning_rate: float
    trees: tuple[Tree, ...]
    calibration: Calibration = field(default_factory=Calibration)
    meta: dict = field(default_factory=dict)
    # Where each of its features is in the rows it is given, when those have more or other-ordered
    # columns (a reranker fitted by an earlier mel, which computed fewer features); None: the same.
    columns: tuple[int, ...] | None = None

    def logits(self, X: np.ndarray) -> np.ndarray:
        if self.columns is not None:
            X = X[:, list(self.columns)]
        out = np.full(len(X), self.init, dtype=np.float64)
        for tree in self.trees:
            out += self.learning_rate * tree.predict(X)
        return out

    def probabilities(self, X: np.ndarray, mention: np.ndarray, langs: list[str]) -> np.ndarray:
        """Calibrated P(candidate is right) per row; `mention` numbers each row's mention (0..n-1, grouped
        or not), `langs` is each mention's language."""
        return calibrated(self.logits(X), mention, langs, self.calibration)

    def trees_meta(self) -> dict:
        """The meta of the fit its trees come from (a recalibration keeps an earlier fit's trees)."""
        if self.meta.get("refit") == "calibration":
            source = self.meta.get("trees_from")
            return source if isinstance(source, dict) else {}
        return self.meta

    def gold_sketches(self, where: str) -> dict[str, LinkSketch]:
        """Sketches of the gold mentions its trees and its calibration were fitted on ("trees",
        "calibration"; the trees' gold also calibrated them), those it keeps."""
        recalibrated = self.meta.get("refit") == "calibration"
        parts = {"trees": self.trees_meta(), "calibration": self.meta if recalibrated else {}}
        out = {}
        for part, meta in parts.items():
            if "gold_sketch" in meta and (sketch := LinkSketch.from_json(meta["gold_sketch"], f"{where}: {part}")):
                out[part] = sketch
        return out

    def to_json(self) -> dict:
        return {"format": FORMAT, "features": list(self.features), "init": self.init,
                "learning_rate": self.learning_rate, "trees": [tree.to_json() for tree in self.trees],
                "calibration": self.calibration.to_json(), "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict, where: str, expected_features: tuple[str, ...] | None = None) -> Reranker:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ArtifactError(f"{where}: not a reranker (format {found!r}, this mel reads {FORMAT!r})")
        features = tuple(data.get("features") or ())
        columns = None
        if expected_features is not None and features != expected_features:
            missing = sorted(set(features) - set(expected_features))
            if missing or len(set(features)) != len(features):
                raise ArtifactError(f"{where}: fitted on features this mel does not compute "
                                    f"({', '.join(missing) or 'a repeated name'}); tune it again with this version")
            columns = tuple(expected_features.index(name) for name in features)
        try:
            init, rate = float(data["init"]), float(data["learning_rate"])
            trees = tuple(Tree.from_json(t, len(features), f"{where}: tree {i}") for i, t in enumerate(data["trees"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{where}: malformed reranker ({exc})") from None
        if not (math.isfinite(init) and math.isfinite(rate)):
            raise ArtifactError(f"{where}: init and learning_rate must be finite")
        out = cls(features, init, rate, trees, Calibration.from_json(data.get("calibration") or {}, where),
                  dict(data.get("meta") or {}), columns)
        out.gold_sketches(where)  # checked on reading, not first when an evaluation looks
        return out


def softmax_probabilities(logits: np.ndarray, mention: np.ndarray, temperature: float,
                          none_logit: float) -> np.ndarray:
    """p_i = exp(z_i/T) / (exp(b) + sum over the mention's candidates of exp(z_j/T))."""
    z = logits / temperature
    count = int(mention.max()) + 1 if len(mention) else 0
    top = np.full(count, none_logit, dtype=np.float64)
    np.maximum.at(top, mention, z)
    e = np.exp(z - top[mention])
    total = np.exp(none_logit - top)
    np.add.at(total, mention, e)
    return e / total[mention]


def calibrated(logits: np.ndarray, mention: np.ndarray, langs: list[str], calibration: Calibration) -> np.ndarray:
    p = softmax_probabilities(logits, mention, calibration.temperature, calibration.none_logit)
    a = np.array([calibration.platt.get(lang, calibration.platt["*"])[0] for lang in langs])[mention] \
        if len(mention) else np.zeros(0)
    c = np.array([calibration.platt.get(lang, calibration.platt["*"])[1] for lang in langs])[mention] \
        if len(mention) else np.zeros(0)
    return platt_capped(p, mention, a, c)


def platt_capped(p: np.ndarray, mention: np.ndarray, a: np.ndarray | float, c: np.ndarray | float) -> np.ndarray:
    """sigmoid(a * logit(p) + c) per row, scaled back where a mention's total would pass 1."""
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    scaled = 1.0 / (1.0 + np.exp(-(a * np.log(clipped / (1 - clipped)) + c)))
    # At most one candidate is right: Platt can lift two close ones above a total of 1; scale those back.
    total = np.zeros(int(mention.max()) + 1 if len(mention) else 0)
    np.add.at(total, mention, scaled)
    return scaled / np.maximum(total, 1.0)[mention]


def read_reranker(path: str | os.PathLike | None, expected_features: tuple[str, ...]) -> Reranker:
    """A reranker file, or (None) the default shipped with mel."""
    if path is None:
        text = resources.files("mel.linker").joinpath(DEFAULT_FILE).read_bytes()
        where = f"mel/linker/{DEFAULT_FILE}"
    else:
        try:
            text = Path(path).read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"{path}: file not found") from None
        where = str(path)
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ArtifactError(f"{where}: not valid JSON ({exc})") from None
    return Reranker.from_json(data, where, expected_features)
