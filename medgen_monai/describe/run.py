"""Describe a dataset into a description bank: ask the backend, validate, append, resume.

The bank layout (the reader is :class:`medgen_monai.describe.DescriptionBank`)::

    <bank>/<slug(category)>.jsonl   accepted: {"id", "image", "category", "description", "attributes",
                                              "task", "backend", "model"}
    <bank>/rejected.jsonl           rejected: {"id", "image", "category", "reasons", "raw", "task", "backend", "model"}
    <bank>/bank.json                {"task", "backend", "model", "vocabulary", "counts", "rejected",
                                     "rejection_rate", ...} (rewritten atomically at the end of a run)

Lines are appended a batch at a time and flushed, each line complete (ASCII JSON, so no answer's text can
fail to encode); a line cut short by a killed run is ignored with a warning and dropped before the next
append. ``bank.json`` is rewritten atomically at the end of every run, also one that fails. A rerun skips
every image id already in a category file or in ``rejected.jsonl``; an image whose request failed
transiently (server error, timeout, lost connection) is in neither, so the next run asks again.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text
from .backends import Describer, RequestFailed
from .prompts import PROMPT_VERSION
from .tasks import DescribeTask, category_slug, get_task
from .validation import validate

__all__ = ["BANK_FILE", "REJECTED_FILE", "describe_dataset", "read_bank_lines", "load_datalist", "rejection_reasons"]

BANK_FILE = "bank.json"
REJECTED_FILE = "rejected.jsonl"
#: how much of a rejected raw answer is kept (a hostile server may send megabytes)
RAW_KEPT = 4000


def rejection_reasons(lines: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Rejection code -> the number of rejected answers with at least one reason of that code (``describe``'s
    summary and ``bank-stats`` count with this one function)."""
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update({str(r).split(":", 1)[0] for r in line.get("reasons", [])})
    return dict(sorted(counts.items()))


def _kept_raw(raw: str) -> str:
    """A rejected answer as stored: at most :data:`RAW_KEPT` characters, de-identified (a model may read a name
    burned into an image), unpaired surrogates escaped."""
    from ..text.deid import scrub_text

    text = raw if len(raw) <= RAW_KEPT else raw[:RAW_KEPT] + f" ... [{len(raw) - RAW_KEPT} more characters]"
    return scrub_text(text.encode("utf-8", "backslashreplace").decode("utf-8"))[0]


def read_bank_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a bank ``.jsonl`` file; a truncated (unparsable, unterminated) last line is skipped
    with a warning.

    Raises:
        ValueError: a line other than the last is not a JSON object (the file is corrupt), naming file and line.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(f"{path}: line {number} is incomplete (a killed run?); ignored", stacklevel=2)
                continue
            raise ValueError(f"{path}: line {number}: expected one JSON object per line, got {line[:80]!r}")
        records.append(record)
    return records


def _drop_partial_line(path: Path) -> None:
    """Cut a file back to its last complete line (what a killed run may leave) before appending to it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _existing(bank: Path, task: DescribeTask) -> tuple[dict[str, str], dict[str, int], int]:
    """(id -> where it is, accepted count per category, rejected count) of the bank's current files."""
    seen: dict[str, str] = {}
    counts: Counter[str] = Counter()
    rejected = 0
    for path in sorted(bank.glob("*.jsonl")):
        lines = read_bank_lines(path)
        _drop_partial_line(path)  # this run appends after the last complete line
        for line in lines:
            if line.get("task", task.name) != task.name:
                raise ValueError(
                    f"{path}: the bank holds {line.get('task')!r} descriptions; this run describes "
                    f"{task.name!r}: use another --out folder"
                )
            if "id" not in line or (path.name != REJECTED_FILE and "category" not in line):
                raise ValueError(f"{path}: a line without 'id' or 'category': {str(line)[:80]}")
            seen[str(line["id"])] = path.name
            if path.name == REJECTED_FILE:
                rejected += 1
            else:
                counts[str(line["category"])] += 1
    return seen, dict(counts), rejected


def _load_image(record: Mapping[str, Any], key: str) -> Any:
    from PIL import Image

    with Image.open(record[key]) as image:
        image.load()
        return image.copy()


def _append(path: Path, lines: Iterable[Mapping[str, Any]]) -> None:
    _drop_partial_line(path)
    with path.open("a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_datalist(source: str | Path, layout: str | None = None) -> list[dict[str, Any]]:
    """Records to describe: a JSON datalist file (a list of records, or a dict of lists such as MONAI's
    ``{"training": [...], "validation": [...]}``), or a dataset root read in ``layout``.

    Raises:
        ValueError: the path is missing, the JSON is not a datalist, or a folder is given without a layout.
    """
    from ..data import read_dataset

    path = Path(source)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not a JSON datalist ({e})") from None
        if isinstance(data, Mapping):
            data = [r for value in data.values() if isinstance(value, list) for r in value]
        if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
            raise ValueError(f"{path}: expected a JSON list of records (or a dict of such lists)")
        return [dict(r) for r in data]
    if path.is_dir():
        if layout is None:
            raise ValueError(f"{path}: a dataset folder needs --layout (isic, kvasir, mimic_cxr)")
        return read_dataset(layout, path)
    raise ValueError(f"--images: {path} is neither a dataset folder nor a JSON datalist file")


def describe_dataset(
    datalist: Sequence[Mapping[str, Any]],
    task: DescribeTask | str,
    describer: Describer,
    bank_dir: str | Path,
    batch_size: int = 8,
    progress: bool = True,
    limit: int | None = None,
    max_chars: int | None = None,
) -> dict[str, Any]:
    """Describe every record of ``datalist`` not yet in the bank, validate the answers and store them.

    Args:
        datalist: records with ``id``, the class (``label_name`` or ``label``) and the image path
            (``image``; cxr: ``frontal``); the oracle also needs ``attributes``.
        task: the describe task (or its name); must be the describer's.
        describer: the backend.
        bank_dir: the bank folder (created).
        batch_size: records per backend call (and per flush to disk).
        progress: show a tqdm progress bar.
        limit: describe at most this many new records in this run (None: all).
        max_chars: the longest description accepted (default: the task's, see
            :func:`~medgen_monai.describe.validation.validate`).

    Returns:
        the summary: ``bank.json``'s content plus ``bank`` (the folder), ``described`` (records asked in
        this run), ``accepted`` / ``rejected_now`` (of them), ``skipped`` (already in the bank) and
        ``reasons`` (rejection codes of this run -> answers with that code) and ``failed`` (transient request
        failures of this run, not recorded: the next run asks again).

    Raises:
        ValueError: a record without an id, a duplicate id, an unknown class, a missing image file, a record
            the backend cannot describe (oracle: no attributes), or a bank made for another task or model.
            Every record is checked before the first model call.
    """
    from tqdm import tqdm

    task = get_task(task)
    if describer.task.name != task.name:
        raise ValueError(f"the describer is for task {describer.task.name!r}, the run for {task.name!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if limit is not None and int(limit) < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    bank = Path(bank_dir)
    bank.mkdir(parents=True, exist_ok=True)
    meta_path = bank / BANK_FILE
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        for key, value in (("task", task.name), ("backend", describer.name), ("model", describer.model)):
            if meta.get(key) != value:
                raise ValueError(
                    f"{meta_path}: the bank was made with {key} {meta.get(key)!r}, this run uses {value!r}; "
                    "describe into another --out folder"
                )
    seen, counts, rejected = _existing(bank, task)

    # check every record before asking the model anything: a bad record fails now, not after hours
    todo: list[tuple[Mapping[str, Any], str]] = []
    ids: set[str] = set()
    skipped = 0
    for index, record in enumerate(datalist):
        if "id" not in record:
            raise ValueError(f"datalist record {index}: no 'id'")
        record_id = str(record["id"])
        if record_id in ids:
            raise ValueError(f"datalist record {index}: id {record_id!r} appears twice; ids must be unique")
        ids.add(record_id)
        if record_id in seen:
            skipped += 1
            continue
        category = task.category(record)
        if task.image_key not in record:
            raise ValueError(
                f"record {record_id!r}: no {task.image_key!r} image path (the {task.name} task describes it)"
            )
        if not Path(record[task.image_key]).is_file():
            raise ValueError(f"record {record_id!r}: {task.image_key} {record[task.image_key]}: file not found")
        describer.check_record(record)
        todo.append((record, category))
    if limit is not None:
        todo = todo[: int(limit)]

    rejected_lines: list[dict[str, Any]] = []
    accepted_now = failed = 0
    bar = tqdm(total=len(todo), desc=f"describe {task.name} ({describer.name})", unit="image", disable=not progress)
    try:
        for start in range(0, len(todo), int(batch_size)):
            batch = todo[start : start + int(batch_size)]
            records = [r for r, _ in batch]
            images = [_load_image(r, task.image_key) if describer.needs_images else None for r in records]
            answers = describer.describe(images, records)
            if len(answers) != len(records):
                raise RuntimeError(
                    f"{type(describer).__name__} returned {len(answers)} answers for {len(records)} images"
                )
            lines: dict[str, list[dict[str, Any]]] = {}
            batch_counts: Counter[str] = Counter()
            batch_rejected: list[dict[str, Any]] = []
            for (record, category), raw in zip(batch, answers):
                if isinstance(raw, RequestFailed) and raw.transient:
                    failed += 1  # not an answer: the next run asks again
                    continue
                common = {"id": str(record["id"]), "image": str(record[task.image_key]), "category": category}
                stamp = {"task": task.name, "backend": describer.name, "model": describer.model}
                verdict = None if isinstance(raw, RequestFailed) else validate(task, raw, category, max_chars)
                if verdict is not None and verdict.ok:
                    line = {**common, "description": verdict.description, "attributes": verdict.attributes, **stamp}
                    lines.setdefault(f"{category_slug(category)}.jsonl", []).append(line)
                    batch_counts[category] += 1
                else:
                    why = [f"request_failed: {raw.reason}"] if verdict is None else verdict.reasons
                    line = {**common, "reasons": why, "raw": "" if verdict is None else _kept_raw(str(raw)), **stamp}
                    lines.setdefault(REJECTED_FILE, []).append(line)
                    batch_rejected.append(line)
            for name, file_lines in lines.items():
                _append(bank / name, file_lines)
            # counted once on disk, so that bank.json always matches the files
            for category, n in batch_counts.items():
                counts[category] = counts.get(category, 0) + n
            accepted_now += sum(batch_counts.values())
            rejected_lines += batch_rejected
            rejected += len(batch_rejected)
            bar.update(len(batch))
            bar.set_postfix(accepted=accepted_now, rejected=len(rejected_lines), failed=failed)
    finally:
        bar.close()
        # whatever happened to a request, the bank's summary matches its files
        meta = _write_meta(meta_path, task, describer, counts, rejected)

    return {
        **meta,
        "bank": str(bank),
        "described": accepted_now + len(rejected_lines) + failed,
        "accepted_now": accepted_now,
        "rejected_now": len(rejected_lines),
        "failed": failed,
        "skipped": skipped,
        "reasons": rejection_reasons(rejected_lines),
    }


def _write_meta(
    path: Path, task: DescribeTask, describer: Describer, counts: Mapping[str, int], rejected: int
) -> dict[str, Any]:
    total = sum(counts.values()) + rejected
    meta = {
        "task": task.name,
        "backend": describer.name,
        "model": describer.model,
        "prompt": PROMPT_VERSION,
        "vocabulary": task.vocabulary(),
        "counts": {c: counts[c] for c in sorted(counts)},
        "files": {c: f"{category_slug(c)}.jsonl" for c in sorted(counts)},
        "accepted": sum(counts.values()),
        "rejected": rejected,
        "rejection_rate": rejected / total if total else 0.0,
    }
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
    return meta
