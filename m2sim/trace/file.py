"""The versioned trace file (``.m2trace``): recorded scored active sets, replayable by both backends.

Layout: an uncompressed NumPy ``.npz`` (no pickles) holding
  ``header``  uint8 bytes of a UTF-8 JSON object: magic, schema_version, model shape, counts;
  ``offsets`` int64 (num_tokens * num_layers + 1,): row r = token * num_layers + layer;
  ``ids``     int32 concatenated active ids, each row sorted by descending score;
  ``scores``  float32 concatenated scores.
Writes are atomic (temporary file, then rename). Opening checks magic, version and shapes.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from m2sim.errors import M2SimError
from m2sim.trace.base import ActivationSource, ActiveSet

MAGIC = "M2TRACE"
SCHEMA_VERSION = 1


class TraceFormatError(M2SimError):
    """A trace file is missing, corrupt, of another schema version or of another model."""


@dataclass(frozen=True, kw_only=True)
class TraceHeader:
    model: str
    num_layers: int
    num_neurons: int  # ids per layer (d_ff / neurons_per_id)
    d_model: int
    num_tokens: int
    neurons_per_id: int = 1
    source: str = "recorded"  # "recorded" (real backend) or "synthetic"
    notes: dict = field(default_factory=dict)
    magic: str = MAGIC
    schema_version: int = SCHEMA_VERSION


class TraceWriter:
    """Collects rows in (token, layer) order and writes them atomically on ``save``."""

    def __init__(self, *, model: str, num_layers: int, num_neurons: int, d_model: int,
                 neurons_per_id: int = 1, source: str = "recorded",
                 notes: Optional[dict] = None):
        self._meta = dict(model=model, num_layers=num_layers, num_neurons=num_neurons,
                          d_model=d_model, neurons_per_id=neurons_per_id, source=source,
                          notes=notes or {})
        self._ids: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def add(self, token: int, layer: int, ids: np.ndarray, scores: np.ndarray) -> None:
        L = self._meta["num_layers"]
        row = len(self._ids)
        if row != token * L + layer:
            raise ValueError(f"rows must come in (token, layer) order: expected token "
                             f"{row // L} layer {row % L}, got token {token} layer {layer}")
        ids = np.asarray(ids, dtype=np.int32)
        scores = np.asarray(scores, dtype=np.float32)
        if ids.shape != scores.shape or ids.ndim != 1:
            raise ValueError("ids and scores must be 1-D and of equal length")
        order = np.argsort(-scores, kind="stable")
        self._ids.append(ids[order])
        self._scores.append(scores[order])

    def save(self, path: str | Path) -> Path:
        L = self._meta["num_layers"]
        if len(self._ids) % L:
            raise ValueError(f"{len(self._ids)} rows is not a whole number of tokens of {L} layers")
        header = TraceHeader(num_tokens=len(self._ids) // L, **self._meta)
        lengths = np.array([len(a) for a in self._ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate(self._ids) if self._ids else np.empty(0, np.int32)
        scores = np.concatenate(self._scores) if self._scores else np.empty(0, np.float32)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = np.frombuffer(json.dumps(asdict(header)).encode(), dtype=np.uint8)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, header=blob, offsets=offsets, ids=ids, scores=scores)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def write_trace(source: ActivationSource, path: str | Path, *, num_tokens: int, model: str,
                d_model: int, notes: Optional[dict] = None) -> Path:
    """Record ``num_tokens`` tokens of any source (e.g. a synthetic one) into a trace file."""
    writer = TraceWriter(model=model, num_layers=source.num_layers,
                         num_neurons=source.num_neurons, d_model=d_model,
                         neurons_per_id=getattr(source, "neurons_per_id", 1),
                         source="synthetic", notes=notes)
    for t in range(num_tokens):
        for layer in range(source.num_layers):
            a = source.active(t, layer)
            writer.add(t, layer, a.ids, a.scores)
    return writer.save(path)


class RecordedTrace:
    """An ``ActivationSource`` backed by a trace file."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise TraceFormatError(f"trace file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = json.loads(bytes(z["header"]).decode())
                self.offsets = z["offsets"]
                self.ids = z["ids"]
                self.scores = z["scores"]
        except TraceFormatError:
            raise
        except Exception as e:  # zip, key or JSON damage
            raise TraceFormatError(f"{path}: not a readable m2sim trace ({e})") from None
        if raw.get("magic") != MAGIC:
            raise TraceFormatError(f"{path}: bad magic {raw.get('magic')!r} (expected {MAGIC})")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise TraceFormatError(f"{path}: trace schema version {raw.get('schema_version')} "
                                   f"is not supported (this m2sim reads {SCHEMA_VERSION})")
        self.header = TraceHeader(**raw)
        h = self.header
        rows = h.num_tokens * h.num_layers
        ok = (len(self.offsets) == rows + 1 and self.offsets[0] == 0
              and self.offsets[-1] == len(self.ids) == len(self.scores)
              and bool(np.all(np.diff(self.offsets) >= 0)))
        if not ok:
            raise TraceFormatError(f"{path}: offsets do not match {h.num_tokens} tokens x "
                                   f"{h.num_layers} layers (truncated or corrupt)")
        if len(self.ids) and (self.ids.min() < 0 or self.ids.max() >= h.num_neurons):
            raise TraceFormatError(f"{path}: neuron ids outside [0, {h.num_neurons})")
        self.path = path
        self.num_layers = h.num_layers
        self.num_neurons = h.num_neurons
        self.neurons_per_id = h.neurons_per_id
        self.num_tokens = h.num_tokens

    def check_model(self, *, model: str, num_layers: int, d_ff: int, d_model: int) -> None:
        """Raise unless the trace was recorded on a model of this shape."""
        h = self.header
        got = (h.num_layers, h.num_neurons * h.neurons_per_id, h.d_model)
        want = (num_layers, d_ff, d_model)
        if got != want:
            raise TraceFormatError(
                f"trace {self.path.name} was recorded on {h.model} (layers, d_ff, d_model) = "
                f"{got}; the configured model {model} has {want}")

    def _row(self, token: int, layer: int) -> slice:
        if not 0 <= token < self.num_tokens:
            raise TraceFormatError(f"trace {self.path.name} holds {self.num_tokens} tokens; "
                                   f"token {token} was asked for (shorten workload.output_tokens)")
        r = token * self.num_layers + layer
        return slice(int(self.offsets[r]), int(self.offsets[r + 1]))

    def active(self, token: int, layer: int) -> ActiveSet:
        s = self._row(token, layer)
        return ActiveSet(self.ids[s], self.scores[s])

    def max_active(self, layer: int) -> int:
        lengths = np.diff(self.offsets)[layer::self.num_layers]
        return int(lengths.max()) if len(lengths) else 0

    def neuron_frequency(self, layer: int) -> np.ndarray:
        counts = np.zeros(self.num_neurons, dtype=np.float64)
        for t in range(self.num_tokens):
            counts[self.ids[self._row(t, layer)]] += 1
        return counts / max(self.num_tokens, 1)
