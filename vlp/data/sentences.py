"""Sentence splitting for radiology reports, offline.

`nltk.sent_tokenize` needs the pretrained punkt model, which cannot be downloaded here. An *untrained*
`PunktSentenceTokenizer` whose `PunktParameters` list the abbreviations of radiology reports works offline and
handles decimals ("1.5 cm"), dates ("12/3/2010", "Dec. 3") and MIMIC's `___` placeholders. On top of punkt:

- blank lines and numbered-list markers at the start of a line ("1. ", "2) ") start a new sentence, and a list
  marker that punkt leaves on its own ("1." | "Cardiomegaly.") is joined to the item it numbers;
- a list marker that punkt glued to the end of the previous item ("Cardiomegaly 2." | "No effusion.") is moved
  to the next item when it continues the numbering;
- units (cm, mm, ...) are *not* abbreviations, since "measures 1.5 cm. No effusion." ends a sentence; a split
  after a unit is undone only when the next fragment starts in lower case ("1.5 cm. in diameter").

LoVT (Müller et al., ECCV 2022) treats each report sentence as one local text unit; `split_sentences(...,
return_spans=True)` gives the character spans from which the processor builds sentence masks.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache

import numpy as np
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

__all__ = ["ABBREVIATIONS", "split_sentences", "shuffle_sentences", "sentence_tokenizer"]

ABBREVIATIONS = frozenset({
    # Latin and general
    "e.g", "i.e", "etc", "vs", "viz", "cf", "approx", "appr", "ca", "resp", "incl", "esp",
    # titles and names
    "dr", "drs", "mr", "mrs", "ms", "prof", "st",
    # report vocabulary
    "no", "nos", "bilat", "lat", "ant", "post", "sup", "inf", "med", "ext", "int", "rt", "lt", "hx", "dx", "sx",
    "tx", "pt", "pts", "fig", "figs", "ref", "min", "max", "sec", "hr", "hrs", "wk", "wks", "mo", "mos", "yr",
    "yrs", "y.o", "yo", "a.m", "p.m", "p.o", "i.v", "q.d", "b.i.d", "t.i.d", "u.s", "c.t", "m.r",
    # months
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})
"""Lower-case abbreviations (without the final period) that do not end a sentence."""

# Capitalised words that start a new sentence even after an abbreviation ("Pneumothorax: no. The heart ...").
_SENTENCE_STARTERS = frozenset({
    "the", "there", "this", "these", "no", "heart", "lungs", "lung", "cardiac", "cardiomediastinal",
    "mediastinal", "pulmonary", "osseous", "bony", "stable", "interval", "unchanged", "new", "again", "mild",
    "moderate", "severe", "small", "large", "bilateral", "impression", "findings", "compared", "otherwise",
    "normal", "clear", "it", "an",
})
_UNITS = ("cm", "mm", "m", "ml", "cc", "kg", "g", "mg", "l")
_UNIT_END = re.compile(rf"\b(?:{'|'.join(_UNITS)})\.$", re.IGNORECASE)
_MARKER_ONLY = re.compile(r"^\(?(\d{1,2})[.)]$")
_MARKER_START = re.compile(r"^\(?(\d{1,2})[.)]\s")
_TRAILING_MARKER = re.compile(r"\s\(?(\d{1,2})[.)]$")
# Where a new block starts: after a blank line, or at a list marker that begins a line.
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*\(?\d{1,2}[.)][ \t]+\S)")


@lru_cache(maxsize=1)
def sentence_tokenizer() -> PunktSentenceTokenizer:
    """The shared untrained punkt tokenizer with `ABBREVIATIONS` and common report sentence starters."""
    params = PunktParameters()
    params.abbrev_types = set(ABBREVIATIONS)
    params.sent_starters = set(_SENTENCE_STARTERS)
    return PunktSentenceTokenizer(params)


def _blocks(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for m in _BLOCK_BREAK.finditer(text):
        spans.append((start, m.start()))
        start = m.end()
    spans.append((start, len(text)))
    return spans


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split_sentences(text: str, return_spans: bool = False) -> list[str] | list[tuple[int, int]]:
    """Sentences of `text` (whitespace inside each collapsed to single spaces), or with `return_spans` the
    `(start, end)` character spans into `text` (so `text[start:end]` is the sentence as written).
    Empty or whitespace-only input gives `[]`.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_sentences expects str, got {type(text).__name__}")
    tokenizer = sentence_tokenizer()
    spans: list[tuple[int, int]] = []
    for b_start, b_end in _blocks(text):
        block = text[b_start:b_end]
        for s, e in tokenizer.span_tokenize(block):
            s, e = _strip(text, b_start + s, b_start + e)
            if e > s:
                spans.append((s, e))

    # Move a list marker glued to the end of an item ("Cardiomegaly 2.") to the item it numbers.
    last_number = 0
    fixed: list[tuple[int, int]] = []
    for i, (s, e) in enumerate(spans):
        piece = text[s:e]
        m = _MARKER_START.match(piece) or _MARKER_ONLY.match(piece)
        if m:
            last_number = int(m.group(1))
        tail = _TRAILING_MARKER.search(piece)
        number = int(tail.group(1)) if tail else -1
        # "... 2." continues a list; "... 1." starts one only after a colon ("IMPRESSION: 1.").
        starts_list = number == 1 and piece[: tail.start()].rstrip().endswith(":") if tail else False
        if tail and (starts_list or (number > 1 and number == last_number + 1)) and i + 1 < len(spans):
            fixed.append(_strip(text, s, s + tail.start()))
            spans[i + 1] = (s + tail.start() + 1, spans[i + 1][1])
            last_number += 1
            continue
        fixed.append((s, e))
    spans = [(s, e) for s, e in fixed if e > s]

    # Join a marker left alone ("1.") to the next piece, and a split after a unit followed by lower case.
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged:
            ps, pe = merged[-1]
            prev = text[ps:pe]
            lower_next = text[s:e][:1].islower()
            if _MARKER_ONLY.match(prev) or (_UNIT_END.search(prev) and lower_next):
                merged[-1] = (ps, e)
                continue
        merged.append((s, e))
    if return_spans:
        return merged
    return [" ".join(text[s:e].split()) for s, e in merged]


def shuffle_sentences(text: str, rng: random.Random | np.random.Generator | int | None = None) -> str:
    """`text` with its sentences in random order, joined by single spaces: an augmentation for report text
    (the order of findings in a report carries little meaning). `rng` is a `random.Random`, a numpy
    `Generator`, a seed, or None (fresh randomness)."""
    sentences = split_sentences(text)
    if isinstance(rng, np.random.Generator):
        order = rng.permutation(len(sentences)).tolist()
    else:
        if not isinstance(rng, random.Random):
            rng = random.Random(rng)
        order = list(range(len(sentences)))
        rng.shuffle(order)
    return " ".join(sentences[i] for i in order)
