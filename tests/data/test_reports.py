"""Report sectioning and cleaning on reports in the layouts of MIMIC-CXR, IU X-ray and free text."""
from __future__ import annotations

import pytest

from vlp.data.reports import DEID_TOKEN, clean_report, extract_sections, report_text, split_sections

# Layout of a MIMIC-CXR report file: banner, one-space indent, headers in capitals, blank lines holding one space,
# text wrapped at ~78 columns. (Text written for this test; MIMIC reports themselves are credentialed.)
MIMIC_STANDARD = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough and fever  // eval for pneumonia
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 Heart size is normal.  The mediastinal and hilar contours are unremarkable.
 There is a small left pleural effusion.  No pneumothorax.  Lungs are otherwise
 clear.
 
 IMPRESSION: 
 
 Small left pleural effusion.  No pneumonia.
"""

MIMIC_WET_READ = """ WET READ: ___ ___ ___ 9:05 PM
  Right IJ line ends in the lower SVC.  No pneumothorax.
 ______________________________________________________________________________
                                 FINAL REPORT
 HISTORY:  Line placement.
 
 PORTABLE AP CHEST:  Right internal jugular line ends in the lower SVC.  No
 pneumothorax.  Stable cardiomegaly.
 
 IMPRESSON:  Line in satisfactory position.
"""

# No FINDINGS / IMPRESSION header: the observations follow the header block (the ~9k MIMIC reports that the
# official section files leave without either section).
MIMIC_NO_SECTIONS = """                                 FINAL REPORT
 CHEST RADIOGRAPH PERFORMED ON ___
 
 COMPARISON:  Prior exam from ___.
 
 CLINICAL HISTORY:  Fever, question pneumonia.
 
 The lungs are clear.  Heart size is normal.  No effusion.
"""

# Two FINDINGS headers, the first empty (as MIMIC's official parser comments describe), and "FINDINGS AND
# IMPRESSION" mapped to impression.
MIMIC_REPEATED = """ EXAMINATION:  CHEST PORTABLE
 
 FINDINGS:
 
 FINDINGS:  ET tube 4 cm above the carina.  Lungs clear.
 
 FINDINGS AND IMPRESSION:  Satisfactory tube position.
"""


def test_mimic_standard_sections():
    s = extract_sections(MIMIC_STANDARD)
    assert s["findings"] == ("Heart size is normal. The mediastinal and hilar contours are unremarkable. There is a "
                             "small left pleural effusion. No pneumothorax. Lungs are otherwise clear.")
    assert s["impression"] == "Small left pleural effusion. No pneumonia."
    assert s["indication"] == "___M with cough and fever // eval for pneumonia"
    assert s["technique"] == "Chest PA and lateral"
    assert s["comparison"] == "___"
    assert s["examination"] == "CHEST (PA AND LAT)"
    assert s["history"] is None
    assert report_text(MIMIC_STANDARD) == s["findings"] + " " + s["impression"]


def test_mimic_wet_read_view_header_and_typo():
    s = extract_sections(MIMIC_WET_READ)
    # the view description "PORTABLE AP CHEST:" stands for findings; "IMPRESSON" is a typo of impression
    assert s["findings"] == "Right internal jugular line ends in the lower SVC. No pneumothorax. Stable cardiomegaly."
    assert s["impression"] == "Line in satisfactory position."
    assert s["history"] == "Line placement."
    names = [sec.name for sec in split_sections(MIMIC_WET_READ)]
    assert names[:2] == ["wet_read", "final_report"]
    assert "Right IJ" not in report_text(MIMIC_WET_READ)  # the preliminary read is not the report's text


def test_mimic_without_findings_or_impression():
    s = extract_sections(MIMIC_NO_SECTIONS)
    assert s["findings"] is None and s["impression"] is None
    assert s["comparison"] == "Prior exam from ___."
    assert s["history"] == "Fever, question pneumonia."
    # the body paragraph after the header block is the usable text; the header block is not
    assert report_text(MIMIC_NO_SECTIONS) == "The lungs are clear. Heart size is normal. No effusion."


def test_repeated_sections_take_last_non_empty():
    s = extract_sections(MIMIC_REPEATED)
    assert s["findings"] == "ET tube 4 cm above the carina. Lungs clear."
    assert s["impression"] == "Satisfactory tube position."


def test_spans_point_into_the_report():
    for report in (MIMIC_STANDARD, MIMIC_WET_READ, MIMIC_NO_SECTIONS):
        for sec in split_sections(report):
            assert report[sec.start:sec.end] == sec.text


@pytest.mark.parametrize("text", [
    "FINDINGS: Heart normal. IMPRESSION: No acute disease.",
    "findings: Heart normal.\nimpression: No acute disease.",
    "Findings :   Heart normal.   Impression :\n\n No acute disease.",
    "  FINDINGS:\r\n Heart normal.\r\n\r\n IMPRESSION:\r\n No acute disease.\r\n",
    "INDICATION: Cough. COMPARISON: None. FINDINGS: Heart normal. IMPRESSION: No acute disease.",
])
def test_header_case_spacing_and_line_breaks(text):
    s = extract_sections(text)
    assert s["findings"] == "Heart normal."
    assert s["impression"] == "No acute disease."


def test_iu_style_and_deid_placeholder():
    text = ("INDICATION: XXXX-year-old male with chest pain. COMPARISON: None. FINDINGS: There are no XXXX of a "
            "pleural effusion. IMPRESSION: Normal chest x-XXXX.")
    s = extract_sections(text)
    assert s["indication"] == "___-year-old male with chest pain."
    assert s["findings"] == "There are no ___ of a pleural effusion."
    assert s["impression"] == "Normal chest x-___."


def test_free_text_has_no_sections_but_has_text():
    text = "  Heart size normal.\n\nLungs clear,   no effusion. "
    s = extract_sections(text)
    assert s["findings"] is None and s["impression"] is None
    assert report_text(text) == "Heart size normal. Lungs clear, no effusion."


def test_words_like_note_inside_findings_do_not_start_a_section():
    text = "FINDINGS: Tube in place. Note: the tip is low. IMPRESSION: Low tube."
    assert extract_sections(text)["findings"] == "Tube in place. Note: the tip is low."


def test_report_text_empty_inputs():
    assert report_text(None) == ""
    assert report_text("   \n ") == ""
    assert report_text(b"") == ""


def test_clean_report_placeholders_and_whitespace():
    assert clean_report("There are no XXXX XXXX of a  pleural\teffusion .") == \
        f"There are no {DEID_TOKEN} of a pleural effusion."
    assert clean_report("Called Dr. ___ ___ at ___ on ___.") == "Called Dr. ___ at ___ on ___."
    assert clean_report("ComparisXXXX/11 and XXXXyo") == "Comparis___/11 and ___yo"
    # separator lines of MIMIC reports are not placeholders
    assert clean_report("Line A.\n ______________________________ \nLine B.") == "Line A. Line B."
    assert clean_report("a\n\n\n\nb  c", keep_newlines=True) == "a\n\nb c"


def test_clean_report_removal_mode():
    assert clean_report("Normal chest x-XXXX. No XXXX of effusion ( XXXX ).", placeholder="") == \
        "Normal chest x. No of effusion."
    assert clean_report("XXXX. Lungs clear.", placeholder="") == "Lungs clear."


def test_clean_report_bytes_and_bad_utf8():
    raw = "Heart size normal \u2013 no effusion.".encode() + b" \xff\xfeLungs clear."
    assert clean_report(raw) == "Heart size normal \u2013 no effusion. Lungs clear."
    assert extract_sections(b"FINDINGS: ok \x80\x81. IMPRESSION: fine.") == {
        "findings": "ok.", "impression": "fine.", "indication": None, "history": None, "comparison": None,
        "technique": None, "examination": None}
    assert clean_report("A\u00a0B\x07C") == "A BC"  # NBSP normalised, control character dropped


def test_clean_report_keeps_ellipsis_and_collapses_double_period():
    assert clean_report("Stable congestion. . Improved... yes XXXX..") == "Stable congestion. Improved... yes ___."


def test_rejects_non_text():
    with pytest.raises(TypeError):
        clean_report(12)  # type: ignore[arg-type]


def test_capital_headers_inside_a_line():
    s = extract_sections("INDICATION: Positive TB test COMPARISON: None FINDINGS: Heart ok IMPRESSION: normal")
    assert (s["indication"], s["comparison"], s["findings"], s["impression"]) == ("Positive TB test", "None",
                                                                                  "Heart ok", "normal")
    # in lower case the same words are not headers unless a sentence or line starts with them
    assert extract_sections("No change in findings: stable.")["findings"] is None


def test_notes_with_a_history_line_keep_all_their_text():
    # COVID-19 collection style clinical notes: no findings / impression, a "History:" part inside
    note = "Day 4: bilateral consolidations, intubated. History: 73 year old male admitted with fever."
    assert extract_sections(note)["history"] == "73 year old male admitted with fever."
    assert report_text(note) == note
