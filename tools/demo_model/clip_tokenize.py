"""Turns captions into the 77 input ids an SD 1.x text encoder sees, with the trained vocabulary:
[<|startoftext|>] + BPE ids (at most 75) + [<|endoftext|>], padded with <|endoftext|> (the
pad token our special_tokens_map.json names), exactly as otter's ClipTokenizer does."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import bpe_trainer

MAX_LENGTH = 77


class Tokenizer:
    def __init__(self, folder: Path):
        folder = Path(folder)
        self.vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        self.merges = [tuple(line.split(" ")) for line in lines[1:] if line]
        self.bos = self.vocab[bpe_trainer.BOS]
        self.eos = self.vocab[bpe_trainer.EOS]
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, text: str) -> np.ndarray:
        if text not in self._cache:
            ids = bpe_trainer.encode(text, self.vocab, self.merges)[: MAX_LENGTH - 2]
            row = np.full(MAX_LENGTH, self.eos, dtype=np.int64)
            row[0] = self.bos
            row[1:1 + len(ids)] = ids
            self._cache[text] = row
        return self._cache[text]

    def batch(self, texts) -> np.ndarray:
        return np.stack([self(t) for t in texts])
