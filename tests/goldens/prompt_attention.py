"""A small reimplementation of the AUTOMATIC1111 webui's prompt weighting, written from its
documented behaviour (the docstring of prompt_parser.parse_prompt_attention and the wiki's
"Attention/emphasis" section), to make otter's prompt-weighting goldens. Not webui code.

  (text) x1.1   [text] /1.1   (text:w) xw   \\( \\) \\[ \\] \\\\ literal   BREAK new chunk
  unclosed brackets apply to the rest; a stray closing bracket is text; equal neighbours merge.

Then per prompt (sd_hijack_clip): ids of each piece with the piece's weight, 75 per chunk (BREAK
starts a chunk), each chunk [BOS] + ids + [EOS] + padding, multipliers 1 on BOS/EOS/padding;
z = TE(chunk); z *= multipliers; z *= mean(z before) / mean(z after); chunks side by side.
otter's documented differences, followed here too: BREAK inside brackets still breaks; no
comma back-tracking when a chunk fills (the webui's comma_padding_backtrack option)."""
import re

import torch

ROUND, SQUARE = 1.1, 1 / 1.1
TOKEN = re.compile(r"""\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:""", re.X)
BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse(text):
    """[[text, weight, is_break], ...]"""
    res, rounds, squares = [], [], []

    def multiply(start, m):
        for p in range(start, len(res)):
            if not res[p][2]:
                res[p][1] *= m

    def add(t):
        for i, part in enumerate(BREAK.split(t)):
            if i > 0:
                res.append(["", 1.0, True])
            res.append([part, 1.0, False])
    for m in TOKEN.finditer(text):
        t, w = m.group(0), m.group(1)
        if t.startswith("\\"):
            res.append([t[1:], 1.0, False])
        elif t == "(":
            rounds.append(len(res))
        elif t == "[":
            squares.append(len(res))
        elif w is not None and rounds:
            multiply(rounds.pop(), float(w))
        elif t == ")" and rounds:
            multiply(rounds.pop(), ROUND)
        elif t == "]" and squares:
            multiply(squares.pop(), SQUARE)
        else:
            add(t)
    for p in rounds:
        multiply(p, ROUND)
    for p in squares:
        multiply(p, SQUARE)
    if not res:
        res = [["", 1.0, False]]
    merged = []
    for piece in res:
        if merged and not piece[2] and not merged[-1][2] and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(list(piece))
    return merged


def chunks(pieces, encode, bos, eos, pad):
    """[(ids[77], multipliers[77])]"""
    out, ids, mult = [], [], []

    def close():
        nonlocal ids, mult
        n = len(ids)
        out.append(([bos] + ids + [eos] + [pad] * (75 - n), [1.0] + mult + [1.0] * (76 - n)))
        ids, mult = [], []
    for text, weight, is_break in pieces:
        if is_break:
            close()
            continue
        for t in encode(text):
            if len(ids) == 75:
                close()
            ids.append(t)
            mult.append(weight)
    if ids or not out:
        close()
    return out


def weighted_embedding(pieces, encode, bos, eos, pad, text_encoder):
    zs = []
    for ids, mult in chunks(pieces, encode, bos, eos, pad):
        z = text_encoder(torch.tensor([ids]))
        original_mean = z.mean()
        z = z * torch.tensor(mult, dtype=torch.float32).reshape(1, 77, 1).expand(z.shape)
        new_mean = z.mean()
        z = z * (original_mean / new_mean)
        zs.append(z)
    return torch.cat(zs, dim=1)
