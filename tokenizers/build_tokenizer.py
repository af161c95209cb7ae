"""Build `tokenizers/radiology-wordpiece`: the project's lower-cased WordPiece tokenizer for radiology reports.

It is trained with the Hugging Face `tokenizers` library on the real report text of the Indiana
University chest X-ray collection (`../shared/data/iu_reports/reports.jsonl`: the indication, findings
and impression sections of 3,955 reports). The de-identification placeholder `XXXX` is removed before
training so that it never becomes a token. The result loads offline with
`transformers.AutoTokenizer.from_pretrained("tokenizers/radiology-wordpiece")` (or `BertTokenizerFast`)
and is what the "tiny" preset's random-init BERT uses (`bundled:radiology-wordpiece`).

Rebuild (the same data gives the same vocabulary up to a few rare sub-word pieces: the `tokenizers` WordPiece
trainer breaks ties between equally frequent merges in hash order; three rebuilds differed from the bundled
files in 11-21 of 4,094 entries, e.g. `##bl`/`##bladder`)::

    .venv/bin/python tokenizers/build_tokenizer.py                      # defaults below
    .venv/bin/python tokenizers/build_tokenizer.py --data PATH --out DIR --vocab-size 4096

Vocabulary size, 4,096: the IU text has about 2,700 distinct lower-cased words (1,800 seen at least
twice), so 4,096 entries hold every frequent word whole plus the sub-word pieces that spell rare and
unseen words. A larger vocabulary would only add merges seen once or twice, and every entry is a row of
the tiny BERT's embedding matrix that must be learnt from scratch in minutes; a smaller one starts to
split common findings words.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# This file lives in the repository's `tokenizers/` folder, which is not a package (no __init__.py);
# make sure `import tokenizers` below finds the Hugging Face library, not this folder.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402

REPO_ROOT = _HERE.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "iu_reports" / "reports.jsonl"
DEFAULT_OUT = _HERE / "radiology-wordpiece"
FIELDS = ("indication", "findings", "impression")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB_SIZE = 4096
MIN_FREQUENCY = 2
MODEL_MAX_LENGTH = 512

_PLACEHOLDER = re.compile(r"X{2,}")  # IU de-identification: "XXXX", also glued ("XXXX-year-old", "x-XXXX")
_SPACES = re.compile(r"\s+")

# demo-report and findings words whose tokenization `--show` prints
SHOW = [
    "Cardiomegaly. The heart is enlarged.",
    "There is a small right pleural effusion with blunting of the costophrenic angle.",
    "There is a 1.2 cm nodule in the right upper lobe.",
    "A lobulated mass measuring 4.5 cm is seen in the lingula.",
    "Left apical pneumothorax with a visible pleural line.",
    "Patchy airspace consolidation in the left lower lobe with air bronchograms.",
    "No pleural effusion or pneumothorax. The lungs are clear.",
]


def clean_report_text(text: str) -> str:
    """Remove the `XXXX` de-identification placeholder and collapse whitespace (case is kept)."""
    return _SPACES.sub(" ", _PLACEHOLDER.sub(" ", text)).strip()


def read_report_texts(path: str | Path, fields: tuple[str, ...] = FIELDS) -> list[str]:
    """The non-empty, cleaned sections `fields` of every report in a reports.jsonl file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"IU reports not found at {path}; pass --data PATH/TO/iu_reports/reports.jsonl "
            "(see ../shared/data/README.md)"
        )
    texts: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg}); expected one report object per line") from err
            for field in fields:
                value = row.get(field)
                if value is not None and not isinstance(value, str):
                    raise ValueError(f"{path}:{line_no}: field {field!r} should be a string, got {type(value).__name__}")
                value = clean_report_text(value or "")
                if value:
                    texts.append(value)
    if not texts:
        raise ValueError(f"{path}: no text in fields {list(fields)}")
    return texts


def train_wordpiece(texts: list[str], vocab_size: int = VOCAB_SIZE, min_frequency: int = MIN_FREQUENCY) -> Tokenizer:
    """A BERT-style uncased WordPiece tokenizer (normaliser, pre-tokeniser, [CLS]/[SEP] template, decoder)."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, model_max_length: int = MODEL_MAX_LENGTH) -> Path:
    """Write tokenizer.json, vocab.txt, tokenizer_config.json and special_tokens_map.json to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    vocab = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    if [i for _, i in vocab] != list(range(len(vocab))):
        raise RuntimeError("the trained vocabulary has gaps in its ids; cannot write vocab.txt")
    (out_dir / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    specials = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "strip_accents": True,
        "tokenize_chinese_chars": True,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "truncation_side": "right",
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "token_type_ids", "attention_mask"],
        **specials,
    }
    for name, payload in (("tokenizer_config.json", config), ("special_tokens_map.json", specials)):
        (out_dir / name).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return out_dir


def build(data: str | Path = DEFAULT_DATA, out_dir: str | Path = DEFAULT_OUT, vocab_size: int = VOCAB_SIZE,
          min_frequency: int = MIN_FREQUENCY) -> Tokenizer:
    """Read the reports, train, save; returns the trained `tokenizers.Tokenizer`."""
    tok = train_wordpiece(read_report_texts(data), vocab_size=vocab_size, min_frequency=min_frequency)
    save_tokenizer(tok, out_dir)
    return tok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the radiology WordPiece tokenizer on the IU X-ray reports.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"reports.jsonl (default: {DEFAULT_DATA})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--vocab-size", type=int, default=VOCAB_SIZE)
    parser.add_argument("--min-frequency", type=int, default=MIN_FREQUENCY)
    parser.add_argument("--quiet", action="store_true", help="do not print example tokenizations")
    args = parser.parse_args(argv)
    tok = build(args.data, args.out, args.vocab_size, args.min_frequency)
    print(f"wrote {args.out} (vocab size {tok.get_vocab_size()})")
    if not args.quiet:
        for text in SHOW:
            print(f"  {text}\n    -> {' '.join(tok.encode(text, add_special_tokens=False).tokens)}")


if __name__ == "__main__":
    main()
