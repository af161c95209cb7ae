"""Indiana University chest X-ray collection (IU X-ray / Open-i; Demner-Fushman et al., JAMIA 2016) -> manifest.

Release layout (Open-i downloads):

    ROOT/NLMCXR_reports.tgz   -> ecgen-radiology/<uid>.xml   (the .tgz is read directly; an extracted folder works)
    ROOT/NLMCXR_png.tgz       -> CXR<uid>_IM-<...>.png       (extract it anywhere under ROOT or give --images)

The Kaggle copy ("raddar/chest-xrays-indiana-university") names the same images `<uid>_IM-<...>.dcm.png` under
`images/images_normalized/`; both names are recognised.

Each XML has `<AbstractText Label="COMPARISON|INDICATION|FINDINGS|IMPRESSION">`, the MeSH terms (`<major>`) and one
`<parentImage id="CXR1_1_IM-0001-3001">` per image. Rows: one per image, `text` the findings then the impression
(de-identification `XXXX` replaced by `___`), `labels` the MeSH major headings ("Cardiomegaly/borderline" ->
"Cardiomegaly"; "normal" kept), `patient_id` the report uid (IU has one study per patient).
"""
from __future__ import annotations

import logging
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from ..manifest import index_files, manifest_relative, write_manifest
from ..reports import clean_report

__all__ = ["prepare_iu_xray", "read_iu_reports", "parse_iu_xml"]

logger = logging.getLogger(__name__)


def parse_iu_xml(data: bytes | str, name: str = "<xml>") -> dict:
    """One IU report XML as {uid, findings, impression, indication, comparison, mesh_major, mesh_automatic,
    images: [{image_id, caption}]}; section texts are as written (None when empty)."""
    try:
        tree = ET.fromstring(data)
    except ET.ParseError as e:
        raise ValueError(f"{name}: not a valid IU report XML ({e})") from e
    sections: dict[str, str | None] = {}
    for node in tree.iter("AbstractText"):
        label = (node.get("Label") or "").strip().lower()
        text = "".join(node.itertext()).strip()
        sections[label] = text or None
    uid_node = tree.find("uId")
    uid = uid_node.get("id") if uid_node is not None else Path(name).stem
    images = []
    for image in tree.iter("parentImage"):
        caption = image.find("caption")
        images.append({"image_id": image.get("id"),
                       "caption": (caption.text or "").strip() if caption is not None and caption.text else None})
    return {
        "uid": uid,
        "findings": sections.get("findings"),
        "impression": sections.get("impression"),
        "indication": sections.get("indication"),
        "comparison": sections.get("comparison"),
        "mesh_major": [(n.text or "").strip() for n in tree.iter("major") if n.text and n.text.strip()],
        "mesh_automatic": [(n.text or "").strip() for n in tree.iter("automatic") if n.text and n.text.strip()],
        "images": images,
    }


def _xml_sources(reports: Path) -> Iterator[tuple[str, bytes]]:
    if reports.is_file():
        with tarfile.open(reports, "r:*") as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".xml"):
                    yield member.name, tar.extractfile(member).read()
    else:
        for path in sorted(reports.rglob("*.xml")):
            yield str(path), path.read_bytes()


def read_iu_reports(reports: str | Path) -> list[dict]:
    """All reports of `NLMCXR_reports.tgz` (or a folder of the XMLs), sorted by numeric uid."""
    reports = Path(reports)
    if not reports.exists():
        raise FileNotFoundError(f"IU reports not found: {reports}")
    parsed = [parse_iu_xml(data, name) for name, data in _xml_sources(reports)]
    if not parsed:
        raise FileNotFoundError(f"{reports}: no report XML files inside")

    def key(r: dict):
        digits = "".join(ch for ch in str(r["uid"]) if ch.isdigit())
        return (int(digits) if digits else 0, str(r["uid"]))

    return sorted(parsed, key=key)


def _mesh_heads(terms: list[str]) -> list[str]:
    heads: list[str] = []
    for term in terms:
        head = term.split("/")[0].strip()
        if head and head not in heads:
            heads.append(head)
    return heads


def _find_reports(root: Path) -> Path | None:
    for candidate in (root / "NLMCXR_reports.tgz", root / "ecgen-radiology"):
        if candidate.exists():
            return candidate
    return None


def prepare_iu_xray(root: str | Path, out: str | Path, reports: str | Path | None = None,
                    images: str | Path | None = None, keep_missing: bool = False) -> Path:
    """Write the IU X-ray manifest to `out` and return its path.

    `reports` defaults to `root/NLMCXR_reports.tgz` (or `root/ecgen-radiology/`), `images` to `root` (searched
    recursively for Open-i or Kaggle file names). Images not on disk are dropped unless `keep_missing` (then `image`
    is `images/<image_id>.png` under `root`, to be filled in later).
    """
    root, out = Path(root), Path(out)
    reports = Path(reports) if reports else _find_reports(root)
    if reports is None:
        raise FileNotFoundError(f"IU reports (NLMCXR_reports.tgz or ecgen-radiology/) not found in {root}; "
                                "give --reports")
    found = index_files(Path(images) if images else root, (".png", ".jpg", ".jpeg", ".dcm"))
    rows, missing = [], 0
    for report in read_iu_reports(reports):
        findings = clean_report(report["findings"]) if report["findings"] else None
        impression = clean_report(report["impression"]) if report["impression"] else None
        text = " ".join(t for t in (findings, impression) if t) or None
        for image in report["images"]:
            image_id = image["image_id"] or ""
            kaggle = image_id[3:] if image_id.startswith("CXR") else image_id
            path = next((found[n] for n in (f"{image_id}.png", f"{kaggle}.dcm.png", f"{image_id}.jpg",
                                            f"{image_id}.dcm") if n in found), None)
            if path is None:
                missing += 1
                if not keep_missing:
                    continue
                path = root / "images" / f"{image_id}.png"
            rows.append({
                "image": manifest_relative(path, out),
                "text": text,
                "findings": findings,
                "impression": impression,
                "indication": clean_report(report["indication"]) if report["indication"] else None,
                "comparison": clean_report(report["comparison"]) if report["comparison"] else None,
                "labels": _mesh_heads(report["mesh_major"]),
                "boxes": None,
                "patient_id": str(report["uid"]),
                "image_id": image_id,
                "caption": image["caption"],
                "mesh_major": report["mesh_major"],
                "dataset": "iu-xray",
            })
    if not rows:
        raise FileNotFoundError(f"no IU image was found under {images or root} (Open-i CXR*_IM-*.png or Kaggle "
                                "*_IM-*.dcm.png); give --images, or --keep-missing to write the rows anyway")
    logger.info("IU X-ray: %d rows written, %d images not found", len(rows), missing)
    return write_manifest(rows, out)
