"""Checkpoints read once for many runs in one process.

The validation (``experiments/validate_sim.py``) and the profiler (``real.profile``) run the
real backend dozens of times on one checkpoint. Reading a GGUF file (its metadata, the
tokenizer's vocabulary, dequantizing the dense weights) took about 10 s of the 12 s of a
24-token run of SmolLM2-135M on the development VM. A ``CheckpointCache`` reads each file once;
every run still gets a model of its own, built from copies of the tensors read, so no run
sees what another did to its model. An entry is keyed by the file's path, size and
modification time, so a rewritten checkpoint is read again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch

from real.checkpoint import (
    CheckpointError,
    MissingCheckpointError,
    build_model,
    load_model,
    read_checkpoint,
)
from real.model import LlamaArgs, Transformer
from real.tokenizer import Tokenizer, load_tokenizer


def _identity(path: Path) -> tuple:
    """The path with the size and modification time of its file (a directory: of each file)."""
    if not path.exists():
        raise MissingCheckpointError(path, "no such file or directory")
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else [path]
    return (str(path.resolve()), *((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                   for f in files))


class CheckpointCache:
    """What ``load_model`` and ``load_tokenizer`` return, from files read at most once.

    ``keep=False`` keeps nothing: every call reads the file and the model gets the tensors
    read, not copies (one run alone should not hold its weights twice)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self._states: dict[tuple, tuple[LlamaArgs, dict[str, torch.Tensor]]] = {}
        self._tokenizers: dict[tuple, Optional[Tokenizer]] = {}
        self.reads = 0  # checkpoints and tokenizers read so far

    def model(self, path: Union[str, Path], *, dtype: torch.dtype = torch.float32,
              device: Union[str, torch.device] = "cpu", ffn: bool = True) -> Transformer:
        """A new model, as ``real.checkpoint.load_model`` builds it."""
        path = Path(path)
        if not self.keep:
            self.reads += 1
            return load_model(path, dtype=dtype, device=device, ffn=ffn)
        key = (_identity(path), dtype, ffn)
        if key not in self._states:
            self._states[key] = read_checkpoint(path, dtype=dtype, ffn=ffn)
            self.reads += 1
        args, state = self._states[key]
        return build_model(args, {k: v.clone() for k, v in state.items()}, path, dtype=dtype,
                           device=device, ffn=ffn)

    def tokenizer(self, path: Union[str, Path]) -> Optional[Tokenizer]:
        """The checkpoint's tokenizer, or None when it ships without one (or is missing)."""
        path = Path(path)
        try:
            key = _identity(path)
        except MissingCheckpointError:
            return None
        if key not in self._tokenizers:
            try:
                self._tokenizers[key] = load_tokenizer(path)
            except CheckpointError:
                self._tokenizers[key] = None
            self.reads += 1
        return self._tokenizers.pop(key) if not self.keep else self._tokenizers[key]
