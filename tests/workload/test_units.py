"""Durations and sizes as written in manifests."""

from __future__ import annotations

import pytest

from fabric.workload.units import (
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("500us", 0.0005),
        ("1d", 86400.0),
        (" 3s ", 3.0),
        (5, 5.0),
        (0.1, 0.1),
        (0, 0.0),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, 'expected a duration like "30s"'),
        ("5", 'expected a duration like "30s"'),
        ("5 s", 'expected a duration like "30s"'),
        ("5sec", 'expected a duration like "30s"'),
        ("", 'expected a duration like "30s"'),
        ([5], 'expected a duration like "30s"'),
        (-1, "expected a finite, non-negative duration"),
        (float("inf"), "expected a finite, non-negative duration"),
    ],
)
def test_bad_duration(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MiB", 64 * 2**20),
        ("1GiB", 2**30),
        ("512Ki", 512 * 1024),
        ("10MB", 10_000_000),
        ("100B", 100),
        ("64 mib", 64 * 2**20),
        ("1.5KiB", 1536),
        (4096, 4096),
        (4096.0, 4096),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", 'expected a size like "64MiB"'),
        ("64 megs", 'expected a size like "64MiB"'),
        (False, 'expected a size like "64MiB"'),
        (1.5, "expected a whole number of bytes"),
        (-1, "expected a non-negative size"),
    ],
)
def test_bad_size(value: object, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(value)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (5, "5s"),
        (90, "1m30s"),
        (3600, "1h"),
        (1.5, "1.5s"),
        (0.0005, "500us"),
    ],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("size", "text"), [(128 * 2**20, "128MiB"), (2**30, "1GiB"), (1000, "1000B"), (0, "0B")]
)
def test_format_size_round_trips(size: int, text: str) -> None:
    assert format_size(size) == text
    assert parse_size(text) == size
