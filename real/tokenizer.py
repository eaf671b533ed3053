"""Text <-> token ids for a checkpoint, offline, through transformers' tokenizers.

A ``.gguf`` file carries its tokenizer (vocabulary, merges, special ids) in its metadata and is
read with ``AutoTokenizer.from_pretrained(dir, gguf_file=name)``; a Hugging Face directory uses
its tokenizer files. Never touches the hub (``local_files_only=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

from real.checkpoint import CheckpointError, MissingCheckpointError


@dataclass(frozen=True)
class Tokenizer:
    """A thin, stable face over a transformers tokenizer."""

    hf: Any  # transformers.PreTrainedTokenizerBase

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids)

    @property
    def eos_id(self) -> Optional[int]:
        return self.hf.eos_token_id


def load_tokenizer(path: Union[str, Path]) -> Tokenizer:
    """The tokenizer of a ``.gguf`` file or of a Hugging Face model directory."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise MissingCheckpointError(path, "no such file or directory")
    try:
        if path.suffix == ".gguf":
            hf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name,
                                               local_files_only=True)
        else:
            hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(path, f"cannot load a tokenizer ({e})") from None
    return Tokenizer(hf)
