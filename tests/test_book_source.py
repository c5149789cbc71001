"""What the chapters' sources promise a reader: code that fits the rendered page, no stored outputs
(every number comes from this run), and none of the project's own vocabulary."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
# a rendered code cell shows about 80 characters; wider lines are cut off mid-name
WIDTH = 80
INTERNAL = re.compile(r"moonshot|book's target|acceptance criteri|\bthe issue\b", re.IGNORECASE)


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 9


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(path):
    wide = [(c.get("id"), line) for c in cells(path) if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > WIDTH]
    assert not wide, f"{path.name}: {len(wide)} code lines wider than {WIDTH}: {wide[:3]}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_outputs_are_stripped(path):
    kept = [c.get("id") for c in cells(path) if c["cell_type"] == "code"
            and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not kept, f"{path.name}: cells with stored outputs {kept}: strip them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", [*CHAPTERS, ROOT / "README.md"], ids=lambda p: p.name)
def test_no_project_vocabulary(path):
    text = path.read_text() if path.suffix == ".md" else "".join("".join(c["source"]) for c in cells(path))
    assert not INTERNAL.findall(text), f"{path.name}: {sorted(set(INTERNAL.findall(text)))}"
