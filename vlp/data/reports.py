"""Radiology report text: sectioning (findings / impression) and cleaning.

Reports come in three shapes:

- MIMIC-CXR `.txt` files: upper-case headers at the start of a line (` FINDINGS:`, ` IMPRESSION:`,
  ` INDICATION:` ...), a ` FINAL REPORT` banner without a colon, sometimes a ` WET READ:` block above a line
  of underscores, typos in headers (`IMPRESSON:`), and ~9k reports with neither findings nor impression.
- IU X-ray: the XML already separates the sections; joined as text they read `FINDINGS: ... IMPRESSION: ...`.
- Free text without any header.

The approach follows the idea of MIMIC-CXR's official `section_parser.py` (MIT-LCP/mimic-cxr, `txt/`): find
headers, map their names onto a small set of canonical sections, treat view descriptions such as
`PA AND LATERAL CHEST:` as findings, and take the *last* non-empty findings / impression section. It differs in
that (1) known header names are also found case-insensitively and after a sentence end (`... Findings: ...`),
(2) known names in capitals are headers anywhere after a space (IU text on one line), (3) unknown header typos are matched to known names by string similarity instead of a fixed typo list,
(4) administrative sections (indication, comparison, ...) end at their first blank line, so the body paragraphs
that follow them in header-less MIMIC reports are kept as `body` text for `report_text`.

De-identification placeholders (IU's `XXXX`, MIMIC's `___`) become one neutral token, `DEID_TOKEN`.
"""
from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass

__all__ = [
    "DEID_TOKEN", "Section", "SECTION_KEYS", "clean_report", "decode_text", "extract_sections",
    "report_text", "split_sections",
]

DEID_TOKEN = "___"
"""The neutral token for de-identified spans: MIMIC-CXR's own `___`, so IU's `XXXX` and MIMIC read alike."""

SECTION_KEYS = ("findings", "impression", "indication", "history", "comparison", "technique", "examination")
"""Keys of the dict `extract_sections` returns (each None when the report has no such section)."""

# Canonical section name for each known header (lower case, single spaces). A header not listed here is
# matched by the rules in `_canonical_name`.
_KNOWN_HEADERS: dict[str, str] = {
    "findings": "findings", "finding": "findings", "reference findings": "findings",
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "opinion": "impression", "summary": "impression",
    "findings and impression": "impression", "findings/impression": "impression",
    "impression and recommendation": "impression", "impression and recommendations": "impression",
    "indication": "indication", "indications": "indication", "reason for exam": "indication",
    "reason for examination": "indication", "reason for study": "indication", "clinical indication": "indication",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history", "clinical data": "history",
    "comparison": "comparison", "comparisons": "comparison", "comparison exam": "comparison",
    "comparison film": "comparison", "comparison study": "comparison", "reference exam": "comparison",
    "prior": "comparison", "priors": "comparison",
    "technique": "technique", "procedure": "technique", "views": "technique",
    "examination": "examination", "exam": "examination", "type of examination": "examination",
    "study": "examination",
    "wet read": "wet_read", "wetread": "wet_read",
    "addendum": "addendum", "recommendation": "recommendations", "recommendations": "recommendations",
    "recommendation(s)": "recommendations", "notification": "notification", "comment": "comment",
    "comments": "comment", "note": "comment", "date": "date",
}
# Sections that describe the request or the exam rather than the image; they end at their first blank line.
_ADMIN = {"indication", "history", "comparison", "technique", "examination", "wet_read", "notification",
          "date", "recommendations", "final_report"}
# Headers also recognised in any case and after a sentence end ("... Findings: ..."); the others only as
# all-caps headers at the start of a line, since words such as "Note:" or "Study:" occur inside sentences.
_INLINE_HEADERS = (
    "findings", "finding", "impression", "impressions", "conclusion", "conclusions", "findings and impression",
    "findings/impression", "indication", "indications", "reason for exam", "reason for examination",
    "clinical indication", "history", "clinical history", "comparison", "comparisons", "technique",
    "examination", "exam", "wet read", "recommendation", "recommendations", "addendum",
)
_MAIN_WORDS = ("impression", "findings", "history", "comparison", "indication", "technique", "addendum")
# Header names made only of these words describe the view, which MIMIC uses in place of "FINDINGS:".
_VIEW_WORDS = re.compile(
    r"^(?:(?:chest|portable|pa|ap|lat|lateral|frontal|upright|supine|semi-upright|erect|view|views|one|two|"
    r"single|and|&|radiograph|radiographs|ribs|bone|window|film|films|x-ray|xray|of|the|\(|\)|,|/|-)\s*)+$"
)

_KNOWN_ALTERNATION = "|".join(
    sorted((re.escape(h).replace(r"\ ", r"[ \t]+") for h in _INLINE_HEADERS), key=len, reverse=True)
)
# A known header: at the start of the text or of a line, or after a sentence end; any case; then a colon.
_KNOWN_RE = re.compile(rf"(?:^|(?<=[\n.;!?]))[ \t]*(?P<name>{_KNOWN_ALTERNATION})[ \t]*:", re.IGNORECASE)
# The same names written in capitals are headers anywhere after a space ("INDICATION: cough COMPARISON: none").
_KNOWN_CAPS_ALTERNATION = "|".join(
    sorted((re.escape(h.upper()).replace(r"\ ", r"[ \t]+") for h in _INLINE_HEADERS), key=len, reverse=True)
)
_KNOWN_CAPS_RE = re.compile(rf"(?<=\s)(?P<name>{_KNOWN_CAPS_ALTERNATION})[ \t]*:")
# Any all-caps header at the start of a line, as in MIMIC-CXR (e.g. "PA AND LATERAL CHEST:", "IMPRESSON:").
_CAPS_RE = re.compile(r"(?m)^[ \t]*(?P<name>[A-Z][A-Z0-9 ()/,&'-]{1,60}?)[ \t]*:(?!\d)")
# Headers without a colon: MIMIC's banner line.
_BANNER_RE = re.compile(r"(?im)^[ \t]*(?P<name>final\s+report|preliminary\s+report)[ \t]*$")
_RULE_RE = re.compile(r"_{10,}|-{10,}|={10,}")  # separator lines
_IU_DEID_RE = re.compile(r"X{4,}")  # IU X-ray: "XXXX", also inside words ("x-XXXX", "XXXXyo")
_MIMIC_DEID_RE = re.compile(r"(?<!_)_{2,9}(?!_)")  # MIMIC-CXR: "___"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Section:
    """One section of a report: canonical `name`, the `header` as written, its raw `text`, and where the text
    lies in the (decoded, newline-normalised) report: `text == report[start:end]`."""

    name: str
    header: str | None
    text: str
    start: int
    end: int


def decode_text(text: str | bytes | bytearray) -> str:
    """`text` as a `str`: bytes are decoded as UTF-8 with invalid bytes replaced (U+FFFD, then dropped), Windows and
    old-Mac line ends become `\\n`, and the text is NFKC-normalised (non-breaking spaces, ligatures)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TypeError(f"report text must be str or bytes, got {type(text).__name__}")
    text = text.replace("\ufffd", "").replace("\r\n", "\n").replace("\r", "\n")
    return unicodedata.normalize("NFKC", text)


def clean_report(text: str | bytes, placeholder: str = DEID_TOKEN, keep_newlines: bool = False) -> str:
    """Report text ready for a tokenizer.

    - bytes are decoded as UTF-8 with invalid bytes dropped (`decode_text`); control characters are removed;
    - de-identification placeholders (IU `XXXX`, MIMIC `___`, also runs such as `XXXX XXXX` or `___ ___`)
      become one `placeholder`; with `placeholder=""` they are removed and the punctuation and spaces they leave
      behind are tidied (`"no XXXX of a"` -> `"no of a"`, `"( XXXX )"` -> `""`);
    - separator lines of underscores or dashes are removed;
    - whitespace is collapsed to single spaces (with `keep_newlines`, line breaks are kept, at most one blank line);
      spaces before `, . ; :` are removed and a doubled period becomes one (an ellipsis stays).
    """
    text = _CONTROL_RE.sub("", decode_text(text).replace("\t", " "))
    text = _RULE_RE.sub("\n", text)
    marker = "\x00"  # stand-in while runs of placeholders are merged
    text = _IU_DEID_RE.sub(marker, text)
    text = _MIMIC_DEID_RE.sub(marker, text)
    text = re.sub(rf"{marker}(?:[ \t]*{marker})+", marker, text)
    text = text.replace(marker, placeholder)
    if placeholder == "":
        text = re.sub(r"\(\s*\)|\[\s*\]", "", text)
        text = re.sub(r"(?<=\w)-(?=[\s.,;:]|$)", "", text)  # "x-" left by "x-XXXX"
        text = re.sub(r"([.,;:])(?:\s*\1)+", r"\1", text)
    if keep_newlines:
        lines = [re.sub(r" +", " ", line).strip() for line in text.split("\n")]
        text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    else:
        text = re.sub(r"\s+", " ", text)
    text = re.sub(r" +([,.;:])", r"\1", text)
    text = re.sub(r"(?<!\.)\.\.(?!\.)", ".", text)  # "congestion. ." / "XXXX.." -> one period, "..." stays
    if placeholder == "":
        text = re.sub(r"^[\s,.;:]+", "", text)
    return text.strip()


def _canonical_name(header: str) -> str | None:
    """Canonical section name for a header, or None when it does not look like a section header."""
    name = re.sub(r"\s+", " ", header.strip().lower())
    if name in _KNOWN_HEADERS:
        return _KNOWN_HEADERS[name]
    if name in ("final report", "preliminary report"):
        return "final_report"
    for word in _MAIN_WORDS:
        if word in name:
            return word
    if _VIEW_WORDS.match(name):
        return "findings"
    close = difflib.get_close_matches(name, list(_KNOWN_HEADERS), n=1, cutoff=0.8)
    if close:
        return _KNOWN_HEADERS[close[0]]
    return "other"


def _find_headers(text: str) -> list[tuple[int, int, str, str]]:
    """(start, end, canonical name, header as written) of every header, in order, without overlaps."""
    found: dict[int, tuple[int, int, str, str]] = {}
    for regex in (_KNOWN_RE, _KNOWN_CAPS_RE, _BANNER_RE, _CAPS_RE):
        for m in regex.finditer(text):
            header = m.group("name")
            name = _canonical_name(header)
            start = m.start("name")
            if name is None or any(s <= start < e for s, e, _, _ in found.values()):
                continue
            found[start] = (start, m.end(), name, re.sub(r"\s+", " ", header.strip()))
    return [found[k] for k in sorted(found)]


def split_sections(text: str | bytes) -> list[Section]:
    """All sections of a report, in order, with raw (uncleaned) text.

    Text before the first header is a `preamble` section; a report without headers is one `body` section.
    An administrative section (indication, history, comparison, technique, examination, wet read, ...) ends at
    its first blank line after some text; the paragraphs after it form a `body` section, as in MIMIC-CXR reports
    whose observations follow the header block without a FINDINGS header.
    """
    text = decode_text(text)
    headers = _find_headers(text)
    if not headers:
        return [Section("body", None, text, 0, len(text))] if text.strip() else []
    sections: list[Section] = []
    if text[: headers[0][0]].strip():
        sections.append(Section("preamble", None, text[: headers[0][0]], 0, headers[0][0]))
    for i, (_, end, name, header) in enumerate(headers):
        stop = headers[i + 1][0] if i + 1 < len(headers) else len(text)
        body = text[end:stop]
        if name in _ADMIN:
            m = re.search(r"\S.*?\n[ \t]*\n", body, re.DOTALL)  # first blank line after some text
            if m and body[m.end():].strip():
                sections.append(Section(name, header, body[: m.end()], end, end + m.end()))
                sections.append(Section("body", None, body[m.end():], end + m.end(), stop))
                continue
        sections.append(Section(name, header, body, end, stop))
    return sections


def extract_sections(text: str | bytes, placeholder: str = DEID_TOKEN) -> dict[str, str | None]:
    """Findings, impression and the other standard sections of a report, cleaned with `clean_report`.

    Returns a dict with the keys of `SECTION_KEYS`; a key is None when the report has no such section or it is
    empty. When a report repeats a section (MIMIC reports sometimes have two FINDINGS headers, one empty), the last
    non-empty one is used, as MIMIC-CXR's official section files do. Free text without headers gives findings None
    and impression None: use `report_text` to get usable text from any report.
    """
    out: dict[str, str | None] = {key: None for key in SECTION_KEYS}
    for section in split_sections(text):
        if section.name in out:
            cleaned = clean_report(section.text, placeholder=placeholder)
            if cleaned:
                out[section.name] = cleaned
    return out


def report_text(text: str | bytes | None, placeholder: str = DEID_TOKEN,
                include: tuple[str, ...] = ("findings", "impression")) -> str:
    """The text to train on: the `include` sections (findings then impression) joined by a space when the report
    has any of them; else its body paragraphs, i.e. the text after a block of administrative headers (MIMIC reports
    without FINDINGS / IMPRESSION headers) or the whole of a header-less text; else the whole cleaned text (without a
    FINAL REPORT banner), so free-text notes with a "History:" line keep all their text. "" for None or blank input.
    """
    if text is None:
        return ""
    sections = split_sections(text)
    picked = extract_sections(text, placeholder=placeholder)
    parts = [picked[key] for key in include if picked.get(key)]
    if parts:
        return " ".join(parts)
    body = [s.text for s in sections if s.name == "body"]
    cleaned = clean_report("\n".join(body), placeholder=placeholder)
    return cleaned or clean_report(_BANNER_RE.sub("", decode_text(text)), placeholder=placeholder)
