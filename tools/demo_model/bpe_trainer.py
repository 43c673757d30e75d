"""Byte-level BPE trainer writing a CLIP-format tokenizer folder (vocab.json, merges.txt, ...).

The vocabulary is laid out exactly as OpenAI CLIP's: ids 0-255 are the 256 byte symbols (GPT-2
bytes_to_unicode order), 256-511 the same symbols with the end-of-word marker `</w>`, then one id
per merge in merge order, then `<|startoftext|>` and `<|endoftext|>`. Any CLIP tokenizer (otter's,
HuggingFace's) therefore loads the result unchanged; text outside the training corpus still encodes,
byte by byte.

Pre-tokenisation follows CLIP: whitespace collapsed, lowercase, then the pieces are letter runs,
single digits and runs of other non-space characters (plus English contractions).
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

END_OF_WORD = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# [^\W\d_] is "a letter" in Python's re (Unicode-aware), the closest match to CLIP's \p{L}.
PIECE = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+",
                   re.IGNORECASE)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in its own order (CLIP ids 0-255)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


BYTE_SYMBOLS = bytes_to_unicode()


def pre_tokenize(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text).strip().lower()
    return PIECE.findall(text)


def word_symbols(word: str) -> tuple[str, ...]:
    syms = [BYTE_SYMBOLS[b] for b in word.encode("utf-8")]
    syms[-1] += END_OF_WORD
    return tuple(syms)


def train(texts, max_merges: int, min_count: int = 2) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: lexicographically first)."""
    words = collections.Counter(w for t in texts for w in pre_tokenize(t))
    splits = {w: list(word_symbols(w)) for w in words}
    merges: list[tuple[str, str]] = []
    while len(merges) < max_merges:
        pairs: collections.Counter = collections.Counter()
        for w, count in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        best_count = max(pairs.values())
        if best_count < min_count:
            break
        best = min(p for p, c in pairs.items() if c == best_count)
        merges.append(best)
        for w in words:
            s = splits[w]
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return merges


def build_vocab(merges) -> dict[str, int]:
    tokens = list(BYTE_SYMBOLS.values())
    tokens += [t + END_OF_WORD for t in tokens]
    tokens += [a + b for a, b in merges]
    tokens += [BOS, EOS]
    vocab: dict[str, int] = {}
    for t in tokens:
        if t in vocab:
            raise ValueError(f"duplicate token '{t}' (two merges produce the same symbol)")
        vocab[t] = len(vocab)
    return vocab


def encode(text: str, vocab: dict[str, int], merges) -> list[int]:
    """Reference encoder (lowest-rank pair first), used to check the trained tokenizer."""
    rank = {m: i for i, m in enumerate(merges)}
    ids = []
    for w in pre_tokenize(text):
        if w in (BOS, EOS):
            ids.append(vocab[w])
            continue
        s = list(word_symbols(w))
        while len(s) > 1:
            pair = min(zip(s, s[1:]), key=lambda p: rank.get(p, 1 << 30))
            if pair not in rank:
                break
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == pair:
                    out.append(s[i] + s[i + 1])
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            s = out
        ids += [vocab[x] for x in s]
    return ids


def write_tokenizer(out_dir: Path, merges) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab(merges)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                        encoding="utf-8")
    # SD 1.x convention: pad with <|endoftext|>.
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "errors": "replace", "add_prefix_space": False, **special}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return vocab


def main():
    import shapes

    ap = argparse.ArgumentParser(description="Train the demo model's BPE tokenizer on shapes.py captions.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--captions", type=int, default=20000, help="captions drawn from the data stream")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-merges", type=int, default=400)
    args = ap.parse_args()
    texts = [s.caption for s in shapes.batch(args.seed, args.captions, draw=False)]
    merges = train(texts, args.max_merges)
    vocab = write_tokenizer(args.out_dir, merges)
    words = sorted({w for t in texts for w in pre_tokenize(t)})
    longest = max(len(encode(w, vocab, merges)) for w in words)
    print(f"{len(merges)} merges, vocab {len(vocab)}; {len(words)} distinct words, "
          f"longest word = {longest} token(s)")


if __name__ == "__main__":
    main()
