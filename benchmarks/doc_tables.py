"""Put a benchmark's table into a doc between two identical marker lines (`<!-- name -->`)."""

from __future__ import annotations

from pathlib import Path


def replace_between_markers(doc: Path, mark: str, text: str) -> bool:
    """Replace what lies between the two `mark` lines of `doc`; False (doc untouched) if it lacks them."""
    if not doc.is_file() or doc.read_text().count(mark) != 2:
        return False
    before, _, rest = doc.read_text().partition(mark)
    _, _, after = rest.partition(mark)
    doc.write_text(f"{before}{mark}\n{text}\n{mark}{after}")
    return True
