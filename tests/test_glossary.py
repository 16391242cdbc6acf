"""One glossary for the whole course: every chapter renders each term as GLOSSARY.md does."""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "GLOSSARY.md"
CHAPTERS = sorted(ROOT.glob("source/*/*.ipynb"))
HANGUL = re.compile(r"[\uac00-\ud7a3]")
ROW = re.compile(r"^\| ([^|]+?) \| ([^|]+?) \| (\d) \| ([^|]*?) ?\|$")


def glossary() -> list[tuple[str, str, int, list[str]]]:
    """(english, korean, chapter, renderings not to use) for each row of GLOSSARY.md."""
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            avoid = [a.strip() for a in m.group(4).split(";") if a.strip()]
            rows.append((m.group(1), m.group(2), int(m.group(3)), avoid))
    return rows


def chapter_text(path: Path) -> str:
    return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)


def renderings(text: str, english: str, longer=()) -> list[str]:
    """The Korean written in parentheses right after ``english`` (plural and bold allowed), for
    every such place in ``text``, except where ``english`` ends one of the ``longer`` terms
    ("gradient descent" in "batch gradient descent (배치 경사 하강법)")."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(english)}(?:s|es)?\**\s*\(([^)]*)\)", re.I)
    prefixes = [t[: -len(english)].lower() for t in longer]
    found = []
    for m in pattern.finditer(text):
        before = text[: m.start()].lower()
        if HANGUL.search(m.group(1)) and not any(before.endswith(p) for p in prefixes):
            found.append(m.group(1))
    return found


def longer_terms(english: str) -> list[str]:
    return [r[0] for r in glossary()
            if len(r[0]) > len(english) and r[0].lower().endswith(" " + english.lower())]


def table_pairs(text: str) -> list[tuple[str, str]]:
    """(english, korean) from the two-column glossary tables a chapter may keep."""
    pairs = []
    for m in re.finditer(r"^\| ([^|\n]+?) \| ([^|\n]+?) \|$", text, re.M):
        en, ko = m.group(1), m.group(2)
        if not HANGUL.search(ko):
            continue
        ens, kos = re.split(r"\s*[,/]\s*", en), re.split(r"\s*[,/]\s*", ko)
        if len(ens) == len(kos):
            pairs.extend(zip(ens, kos, strict=True))
    return pairs


def test_the_glossary_parses_and_names_each_term_once():
    rows = glossary()
    assert len(rows) > 80
    english = [r[0].lower() for r in rows]
    assert len(english) == len(set(english)), "a term is listed twice"
    assert {r[2] for r in rows} == set(range(1, 8)), "every chapter has terms"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_a_chapter_renders_every_term_as_the_glossary_does(path):
    text = chapter_text(path)
    wrong = []
    for english, korean, _, avoid in glossary():
        for written in renderings(text, english, longer_terms(english)):
            if korean not in written:
                wrong.append(f"{english} ({written}): the glossary says {korean}")
        wrong += [f"{a!r} is written; the glossary's {english} is {korean}"
                  for a in avoid if a in text]
    by_english = {r[0].lower(): r[1] for r in glossary()}
    wrong += [f"glossary table row {en} | {ko}: the glossary says {by_english[en.lower()]}"
              for en, ko in table_pairs(text)
              if en.lower() in by_english and by_english[en.lower()] != ko]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("chapter", range(1, 8))
def test_a_chapter_gives_the_korean_of_each_of_its_terms(chapter):
    path = next(p for p in CHAPTERS if p.parent.name.startswith(f"{chapter:02d}_"))
    text = chapter_text(path)
    tables = {(en.lower(), ko) for en, ko in table_pairs(text)}
    missing = [f"{en} ({ko})" for en, ko, ch, _ in glossary()
               if ch == chapter and (en.lower(), ko) not in tables
               and not any(ko in written for written in renderings(text, en))]
    assert not missing, f"{path.name} never writes: " + ", ".join(missing)


@pytest.mark.parametrize("path", [*CHAPTERS, ROOT / "README.md"], ids=lambda p: p.parent.name)
def test_the_readme_and_every_chapter_link_the_glossary(path):
    text = chapter_text(path) if path.suffix == ".ipynb" else path.read_text(encoding="utf-8")
    assert "GLOSSARY.md" in text


def test_renderings_catch_a_wrong_term_and_accept_the_right_one():
    assert renderings("Dropout breaks **co-adaptation** (동조화).", "co-adaptation") == ["동조화"]
    assert renderings("Batch normalization (배치 정규화, BN)", "batch normalization") == [
        "배치 정규화, BN"]
    assert renderings("epochs (에포크) and lr (0.1)", "epoch") == ["에포크"]
    assert renderings("pre-epoch (에포크)", "epoch") == []
    assert renderings("batch gradient descent (배치 경사 하강법)", "gradient descent",
                      ["batch gradient descent"]) == []
    assert "mini-batch gradient descent" in longer_terms("gradient descent")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.parent.name)
def test_every_chapter_lists_its_references_with_links(path):
    cells = nbformat.read(path, as_version=4).cells
    refs = [c.source for c in cells if c.cell_type == "markdown"
            and c.source.startswith("## References")]
    assert len(refs) == 1, "one References section at the end"
    entries = [line for line in refs[0].splitlines() if line.startswith("- ")]
    assert entries and all(re.search(r"<https?://[^>\s]+>$", e) for e in entries), entries
