"""Durations as config values give them (trainer.max_time): read by validation at
start-up and by the training limits, so both accept exactly the same spellings."""

from __future__ import annotations

import re


def parse_duration(text: str) -> float:
    """Seconds in "1800", "30:00", "00:30:00" or "1:00:30:00" (DD:HH:MM:SS).

    Raises ValueError on anything else; the caller names the config key.
    """
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d*)?", text):
        return float(text)
    parts = text.split(":")
    if not 2 <= len(parts) <= 4 or not all(re.fullmatch(r"\d+", p) for p in parts):
        raise ValueError(text)
    seconds = 0.0
    for part, unit in zip(reversed(parts), (1, 60, 3600, 86400)):
        seconds += int(part) * unit
    return seconds
