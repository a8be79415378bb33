"""De-identification of free text (reports, descriptions) before it conditions generation or is written.

No maintained de-identification library works offline here: presidio's analyzers need a spaCy model
download, scrubadub detects names through TextBlob or spaCy corpora. So this is a documented rule set,
applied in this order, each match replaced by a bracketed tag:

========  ==========================================================================================
tag       what is replaced
========  ==========================================================================================
[NAME]    the input's own identifying strings given as ``known`` (a DICOM study's PatientName parts,
          physicians, operators, institution; IDs and accession number become [ID]), as whole words, any case;
          ``Family^Given`` person names; a capitalised word or initial sequence after a title
          (Dr, Mr, Mrs, Ms, Miss, Prof) or after a role cue ("signed by", "dictated by", "reported by",
          "read by", "attending", "referring physician", "radiologist", "name:", ...)
[EMAIL]   e-mail addresses
[URL]     web addresses
[DATE]    dates with a day: ``2024-03-01``, ``01/03/2024``, ``1.3.24``, ``20240301``, ``1 March 2024``,
          ``March 1, 2024``, ``Mar 1st``; a year alone is kept (HIPAA safe harbour keeps years)
[TIME]    clock times ``14:05``, ``2:05 pm``
[PHONE]   telephone and fax numbers (7 or more digits with the usual separators, optional country code)
[ID]      identifiers: any token with 5 or more digits (record numbers, accession numbers, ZIP codes), and
          the token after an ID cue (MRN, ID, accession, acc, case, patient no, #)
[ADDRESS] street addresses (a house number, up to three words, a street type: Street, Rd, Avenue, ...)
[AGE>89]  ages over 89 ("92-year-old", "aged 95", "age: 91", "93 yo"); younger ages are kept
========  ==========================================================================================

The rules are conservative for clinical text: measurements ("5 mm", "3.2 cm"), scores ("PI-RADS 4",
"Gleason 3+4"), spine levels ("L5") and short numbers pass unchanged. They cannot know every name that is
not after a title or cue; that is why a study's own names are passed as ``known``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["DEID_TAGS", "scrub_text", "identifying_strings"]

DEID_TAGS: tuple[str, ...] = (
    "[NAME]",
    "[EMAIL]",
    "[URL]",
    "[DATE]",
    "[TIME]",
    "[PHONE]",
    "[ID]",
    "[ADDRESS]",
    "[AGE>89]",
)

_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:0?[1-9]|[12][0-9]|3[01])(?:st|nd|rd|th)?"
_NAME_WORD = r"(?:[A-Z][a-zA-Z'\-]+|[A-Z]\.?)"
_NAME = rf"{_NAME_WORD}(?:[ ,]+{_NAME_WORD}){{0,3}}"
_TITLE = r"\b(?:Dr|Doctor|Mr|Mrs|Ms|Miss|Mx|Prof|Professor)\b\.?"
_CUE = (
    r"\b(?:(?:electronically\s+)?signed\s+by|dictated\s+by|reported\s+by|read\s+by|reviewed\s+by|verified\s+by|"
    r"transcribed\s+by|approved\s+by|attending(?:\s+physician)?|referring\s+(?:physician|doctor|clinician)|"
    r"radiologist|resident|fellow|technologist|physician|surgeon|patient\s+name|name|cc|contact)\b\s*[:\-]?"
)
_STREET = (
    r"(?:street|st|avenue|ave|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|way|place|pl|terrace|close|"
    r"square|sq|highway|hwy|parkway|pkwy)\.?"
)

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[EMAIL]", re.compile(r"\b[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+\b")),
    ("[URL]", re.compile(r"\b(?:https?://|www\.)\S+", re.I)),
    ("[NAME]", re.compile(r"\b[A-Za-z'\-]+\^[A-Za-z'\-^]*")),  # DICOM person names, Family^Given
    ("[NAME]", re.compile(rf"(?P<keep>{_TITLE}\s*){_NAME}")),
    ("[NAME]", re.compile(rf"(?P<keep>(?i:{_CUE})\s*){_NAME}")),
    (
        "[DATE]",
        re.compile(rf"\b{_DAY}\s+{_MONTHS}(?:,?\s+\d{{2,4}})?\b|\b{_MONTHS}\s+{_DAY}(?:,?\s+\d{{2,4}})?\b", re.I),
    ),
    ("[DATE]", re.compile(r"\b\d{1,4}[/\-.]\d{1,2}[/\-.]\d{1,4}\b")),
    ("[DATE]", re.compile(r"\b(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\b")),
    ("[TIME]", re.compile(r"\b(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:\s*[ap]\.?m\.?)?\b", re.I)),
    (
        "[PHONE]",
        re.compile(r"(?:\+\d{1,3}[\s.\-]?)?(?:\(\d{2,4}\)[\s.\-]?)?\d{3,4}[\s.\-]\d{3,4}(?:[\s.\-]\d{2,4})?\b"),
    ),
    ("[ADDRESS]", re.compile(rf"\b\d{{1,5}}\s+(?:[A-Za-z]+\s+){{1,3}}{_STREET}(?=\W|$)", re.I)),
    (
        "[ID]",
        re.compile(
            r"(?i:\b(?:mrn|id|accession|acc|case|patient\s+no|record|ref)\b\.?\s*(?:no\.?|number|#)?\s*[:#]?\s*)"
            r"[A-Za-z0-9\-]*\d[A-Za-z0-9\-]*"
        ),
    ),
    ("[ID]", re.compile(r"#\s*[A-Za-z0-9\-]*\d[A-Za-z0-9\-]*")),
    ("[ID]", re.compile(r"\b[A-Za-z\-]*\d(?:[A-Za-z\-]*\d){4,}[A-Za-z\-]*\b")),
)
_AGE = re.compile(r"\b(?:aged?\s*[:\-]?\s*)?(\d{2,3})(?:\s*-?\s*(?:years?|yrs?|y)(?:\s*-?\s*old)?|\s*y/?o\b)?", re.I)
_AGE_CONTEXT = re.compile(r"(?i)\bage|\byear|\byr|\by/?o\b|\by\b")


def identifying_strings(ds: object) -> list[str]:
    """The identifying values of a DICOM dataset that free text might repeat: the parts of every person name,
    the institution and its address, patient ID, other IDs, study ID and accession number (for
    :func:`scrub_text`'s ``known``)."""
    people = (
        "PatientName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "NameOfPhysiciansReadingStudy",
        "RequestingPhysician",
        "PhysiciansOfRecord",
    )
    keywords = people + (
        "InstitutionName",
        "InstitutionAddress",
        "PatientID",
        "OtherPatientIDs",
        "AccessionNumber",
        "StationName",
        "StudyID",
    )
    found: list[str] = []
    for keyword in keywords:
        value = getattr(ds, keyword, None) if hasattr(ds, keyword) else None
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in values:
            text = str(item).strip()
            if not text:
                continue
            found.append(text)
            if keyword in people:  # a person's family and given names also occur alone ("Mrs Doe")
                parts = [part for part in re.split(r"[\^ ,]+", text) if len(part) > 1]
                found += parts + [" ".join(reversed(parts))] if len(parts) > 1 else parts
    return found


def _scrub_ages(text: str) -> tuple[str, int]:
    count = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal count
        whole = match.group(0)
        if int(match.group(1)) > 89 and _AGE_CONTEXT.search(whole):
            count += 1
            return "[AGE>89]"
        return whole

    return _AGE.sub(replace, text), count


def scrub_text(text: str, known: Iterable[str] = ()) -> tuple[str, dict[str, int]]:
    """Free text with identifiers replaced by tags (see the module for the rules).

    Args:
        text: the text.
        known: identifying strings of the text's source (:func:`identifying_strings` of a DICOM study); each
            (at least two characters) is replaced as a whole word, in any case.

    Returns:
        ``(scrubbed text, {tag: replacements})``.
    """
    if not isinstance(text, str):
        raise ValueError(f"scrub_text: expected text, got {type(text).__name__}")
    counts: dict[str, int] = {}
    for value in sorted({k.strip() for k in known if k and len(k.strip()) >= 2}, key=len, reverse=True):
        tag = "[ID]" if any(c.isdigit() for c in value) else "[NAME]"
        text, n = re.subn(rf"(?<![\w^]){re.escape(value)}(?![\w^])", tag, text, flags=re.I)
        if n:
            counts[tag] = counts.get(tag, 0) + n
    for tag, pattern in _RULES:
        # a title or a cue ("signed by:") stays, only what it introduces is replaced
        replacement = (lambda m, tag=tag: m.group("keep") + tag) if "keep" in pattern.groupindex else tag
        text, n = pattern.subn(replacement, text)
        if n:
            counts[tag] = counts.get(tag, 0) + n
    text, n = _scrub_ages(text)
    if n:
        counts["[AGE>89]"] = n
    return text, counts
