"""User CSV/JSONL datasets: happy paths and every error case (DESIGN §4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elsa.data import load_text_file
from elsa.errors import DataError


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CSV


def test_csv_string_labels_map_by_sorted_value(tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", 'id,text,label\n1,"good  film\nreally",pos\n2,bad,neg\n3,ok,pos\n')
    ds = load_text_file(path)
    assert ds.name == "reviews"
    assert ds.texts == ("good film really", "bad", "ok")
    assert ds.label_names == ("neg", "pos")
    assert ds.labels.tolist() == [1, 0, 1]


def test_csv_integer_labels_sort_numerically(tmp_path: Path) -> None:
    ds = load_text_file(write(tmp_path, "n.csv", "label,text\n10,a\n2,b\n0,c\n"))
    assert ds.label_names == ("0", "2", "10")
    assert ds.labels.tolist() == [2, 1, 0]


def test_csv_with_bom(tmp_path: Path) -> None:
    ds = load_text_file(write(tmp_path, "bom.csv", "\ufefftext,label\na,x\n".encode()))
    assert ds.texts == ("a",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("text,label\n", "no examples"),
        ("text,category\na,b\n", "missing column.*label"),
        ("body,label\na,b\n", "missing column.*text"),
        ("text,label\nfine,a\n  ,b\n", "empty text on line 3"),
        ("text,label\nfine,a\nalso fine,\n", "empty label on line 3"),
        ("text,label\nfine\n", "fewer fields"),
    ],
)
def test_csv_errors(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_text_file(write(tmp_path, "bad.csv", content))


# --------------------------------------------------------------------------- JSONL


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_jsonl_int_and_string_labels(tmp_path: Path) -> None:
    ds = load_text_file(
        write(tmp_path, "a.jsonl", jsonl({"text": "x", "label": 3}, {"text": "y", "label": 1}) + "\n")
    )
    assert ds.label_names == ("1", "3")
    assert ds.labels.tolist() == [1, 0]
    ds = load_text_file(
        write(tmp_path, "b.ndjson", jsonl({"text": "x", "label": "b"}, {"text": "y", "label": "a"}))
    )
    assert ds.label_names == ("a", "b")
    assert ds.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        (jsonl({"text": "a", "label": 0}) + "{not json\n", "invalid JSON on line 2"),
        (jsonl({"text": "a", "label": 0}, [1, 2]), "line 2 is not a JSON object"),
        (jsonl({"text": "a"}), "line 1 is missing key.*label"),
        (jsonl({"label": 1}), "line 1 is missing key.*text"),
        (jsonl({"text": "a", "label": 0}, {"text": " ", "label": 1}), "empty text on line 2"),
        (jsonl({"text": 5, "label": 0}), "text must be a string"),
        (jsonl({"text": "a", "label": 1.5}), "label must be a string or an integer"),
        (jsonl({"text": "a", "label": True}), "label must be a string or an integer"),
        (jsonl({"text": "a", "label": "x"}, {"text": "b", "label": 1}), "mix"),
    ],
)
def test_jsonl_errors(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_text_file(write(tmp_path, "bad.jsonl", content))


# --------------------------------------------------------------------------- file-level errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_text_file(tmp_path / "nope.csv")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_text_file(tmp_path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported file type"):
        load_text_file(write(tmp_path, "data.txt", "text,label\na,b\n"))


def test_invalid_utf8(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_text_file(write(tmp_path, "latin.csv", b"text,label\ncaf\xe9,a\n"))
