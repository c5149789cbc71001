"""What the chapters' sources promise a reader: code that fits the rendered page, no stored outputs
(every number comes from this run), and none of the project's own vocabulary."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.ipynb"))
SOLUTIONS = sorted((ROOT / "book" / "solutions").glob("*.ipynb"))
NOTEBOOKS = [*CHAPTERS, *SOLUTIONS]
# a rendered code cell shows about 80 characters; wider lines are cut off mid-name
WIDTH = 80
INTERNAL = re.compile(r"moonshot|book's target|acceptance criteri|\bthe issue\b", re.IGNORECASE)


def cells(path):
    return json.loads(path.read_text())["cells"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name + "/" + p.name)
def test_code_lines_fit_the_page(path):
    wide = [(c.get("id"), line) for c in cells(path) if c["cell_type"] == "code"
            for line in "".join(c["source"]).splitlines() if len(line) > WIDTH]
    assert not wide, f"{path.name}: {len(wide)} code lines wider than {WIDTH}: {wide[:3]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.parent.name + "/" + p.name)
def test_outputs_are_stripped(path):
    kept = [c.get("id") for c in cells(path) if c["cell_type"] == "code"
            and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not kept, f"{path.name}: cells with stored outputs {kept}: strip them (jupyter nbconvert --clear-output)"


@pytest.mark.parametrize("path", [*NOTEBOOKS, ROOT / "README.md"], ids=lambda p: p.parent.name + "/" + p.name)
def test_no_project_vocabulary(path):
    text = path.read_text() if path.suffix == ".md" else "".join("".join(c["source"]) for c in cells(path))
    assert not INTERNAL.findall(text), f"{path.name}: {sorted(set(INTERNAL.findall(text)))}"


def exercises(path):
    """The numbered items under the last cell's '## Exercises' heading."""
    last = "".join(cells(path)[-1]["source"])
    assert "## Summary" in last and "## Exercises" in last, f"{path.name} ends without summary and exercises"
    return [int(n) for n in re.findall(r"^(\d+)\. ", last.split("## Exercises", 1)[1], re.MULTILINE)]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_opens_with_its_question_and_ends_with_exercises(path):
    first = "".join(cells(path)[0]["source"]).split("\n\n")
    assert first[0].startswith("# ") and first[1].startswith("**") and first[1].endswith("?**"), \
        f"{path.name}: the paragraph after the title should be the chapter's question, in bold"
    assert exercises(path) == list(range(1, len(exercises(path)) + 1)) and exercises(path)


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_every_exercise_of_a_solved_chapter_has_its_solution(solution):
    path = ROOT / "book" / solution.name
    assert path.is_file(), f"book/solutions/{solution.name} solves no chapter"
    headings = [int(n) for c in cells(solution) if c["cell_type"] == "markdown"
                for n in re.findall(r"^## Exercise (\d+)", "".join(c["source"]), re.MULTILINE)]
    assert headings == exercises(path)
    # a solution is executed code, not only prose
    code = [c for c in cells(solution) if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    assert len(code) >= len(headings)
    # and the chapter sends its reader there
    last = "".join(cells(path)[-1]["source"])
    assert f"solutions/{path.name}" in last


def test_the_book_lists_every_solution():
    toc = (ROOT / "_toc.yml").read_text()
    page = (ROOT / "book" / "solutions.md").read_text()
    assert SOLUTIONS
    for solution in SOLUTIONS:
        assert f"book/solutions/{solution.stem}\n" in toc and f"(solutions/{solution.name})" in page
