"""The docs' figures are generated from rtmon's own report files (scripts/docs_tables.py): a block
whose report changed, or whose figures were edited by hand, fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_blocks_match_their_reports():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "docs_tables.py"), "--check"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "up to date"


def test_the_readme_quotes_its_measured_tables_from_reports():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Measured results") : text.index("## Offline demo")]
    assert section.count("<!-- generated: ") >= 8
    assert section.count("<!-- generated: ") == section.count("<!-- end generated -->")


def test_an_edited_figure_is_caught(tmp_path):
    """The check compares the whole block: change one digit and it says which file."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_tables
    finally:
        sys.path.pop(0)
    doc = Path("README.md")
    text = (ROOT / doc).read_text()
    match = docs_tables.BLOCK.search(text)
    assert match is not None
    body = match.group("body")
    assert body == docs_tables.render(doc, match.group("spec"))
    edited = body.replace("|", "| 1", 1)
    assert edited != docs_tables.render(doc, match.group("spec"))


def test_a_marker_naming_a_missing_or_broken_report_is_one_line_and_exit_2(capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import docs_tables
    finally:
        sys.path.pop(0)
    for spec in ("yardstick docs/benchmarks/none/single-stream/bench.json", "eval README.md",
                 "table docs/benchmarks/none/bench.md | ## Anything"):
        try:
            docs_tables.render(Path("README.md"), spec)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{spec}: no error")
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
