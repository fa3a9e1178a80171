#!/usr/bin/env python3
"""Fill the docs' figures from rtmon's own report files, so no figure in them is typed by hand.

    python scripts/docs_tables.py           # rewrite every generated block in README.md and docs/*.md
    python scripts/docs_tables.py --check   # exit 1 (and say which) when a block differs from its report

A generated block is the text between a marker line and `<!-- end generated -->`:

    <!-- generated: table docs/benchmarks/<gpu>-<date>/single-stream/bench.md | ## Baseline vs optimized (single-stream) -->
        the first table under that heading of the report's bench.md (rtmon wrote it); `| ## Heading | 2`: the second
    <!-- generated: int8 docs/benchmarks/cpu-<date>-int8/bench/bench.json docs/benchmarks/cpu-<date>-int8/eval/eval.json -->
        the INT8 rung: FP32 and INT8 speed from one bench run, accuracy from one eval run
    <!-- generated: ladder docs/benchmarks/<gpu>-<date>/single-stream/bench.json [more bench.json] -->
        the optimization ladder of each report (`scripts/ladder.py`)
    <!-- generated: eval docs/benchmarks/<gpu>-<date>/eval/eval.json [more eval.json] -->
        accuracy per engine against the ground truth and against the baseline (`scripts/ladder.py`)
    <!-- generated: yardstick docs/benchmarks/<gpu>-<date>/single-stream/bench.json [more bench.json] -->
        each report's yardstick checks judged by today's rule (the medians of its rounds), beside its verdict

Paths are from the repository's root; each block ends with a link to the file it came from.
A test runs `--check`, so a report that changes without its docs (or an edited figure) fails CI.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from ladder import accuracy, int8_rung, ladder, yardstick_rounds  # noqa: E402

DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- generated: (?P<spec>.+?) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def fail(message: str) -> None:
    """Bad input (a marker naming a missing file, heading or kind): one line, exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _report(path: Path) -> dict:
    """A report file rtmon wrote (JSON), or a one-line error naming it."""
    try:
        return json.loads((ROOT / path).read_text())
    except OSError as e:
        fail(f"{path}: {e.strerror or e}")
    except json.JSONDecodeError as e:
        fail(f"{path} is not a JSON report ({e.msg}, line {e.lineno})")


def _report_name(path: Path) -> str:
    """A report's label: its day's folder, and its own folder where that is not the scenario's
    plain name (two single-stream reports of one day)."""
    day, folder = path.parent.parent.name, path.parent.name
    return day if folder in ("single-stream", "offline", "multi-stream") else f"{day}/{folder}"


def _link(doc: Path, target: Path) -> str:
    return os.path.relpath(ROOT / target, (ROOT / doc).parent)


def table(path: Path, heading: str, nth: int = 1) -> list[str]:
    """The `nth` markdown table under `heading` (before the next heading) in `path`."""
    if not (ROOT / path).is_file():
        fail(f"{path}: no such report")
    lines = (ROOT / path).read_text().splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        fail(f"{path} has no heading {heading!r}")
    tables: list[list[str]] = []
    inside = False
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            if not inside:
                tables.append([])
            tables[-1].append(line)
        inside = line.startswith("|")
    if len(tables) < nth:
        fail(f"{path}: no table {nth} under {heading!r}")
    return tables[nth - 1]


def render(doc: Path, spec: str) -> str:
    kind, _, rest = spec.partition(" ")
    if kind == "table":
        path, heading, *nth = (part.strip() for part in rest.split("|"))
        body, sources = table(Path(path), heading, int(nth[0]) if nth else 1), [Path(path)]
    elif kind == "int8":
        sources = [Path(p) for p in rest.split()]
        bench, evaluation = (_report(source) for source in sources)
        body = int8_rung(bench, evaluation).splitlines()
    elif kind == "ladder":
        sources = [Path(p) for p in rest.split()]
        body = []
        for source in sources:
            body += [ladder(_report(source)), ""]
        body = "\n".join(body).rstrip().splitlines()
    elif kind == "eval":
        sources = [Path(p) for p in rest.split()]
        reports = [_report(source) for source in sources]
        head = "; ".join(f"{r['device']['gpu'] or 'CPU'}, {r['created'][:10]}, {r['frames']} labeled frames of "
                         f"`{r['source']['uri']}`" for r in reports)
        body = [f"{head}, engines at conf {reports[0]['conf']:g}:", "", *accuracy(reports).splitlines()]
    elif kind == "yardstick":
        sources = [Path(p) for p in rest.split()]
        body = yardstick_rounds([(_report_name(s), _report(s)) for s in sources]).splitlines()
    else:
        fail(f"{doc}: unknown generated block kind {kind!r} (table, ladder, eval, int8, yardstick)")
    links = ", ".join(f"[{s.parent.name}/{s.name}]({_link(doc, s)})" for s in sources)
    return "\n".join([*body, "", f"<sub>Generated by `scripts/docs_tables.py` from {links}.</sub>", ""])


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name in DOCS:
        doc = Path(name)
        text = (ROOT / doc).read_text()
        new = BLOCK.sub(lambda m, doc=doc: m.group(1) + render(doc, m.group("spec")) + m.group(4), text)
        if new != text:
            stale.append(name)
            if not check:
                (ROOT / doc).write_text(new)
    if check and stale:
        print(f"error: generated blocks differ from their reports in {', '.join(stale)}; "
              "run python scripts/docs_tables.py", file=sys.stderr)
        return 1
    print("up to date" if check else "rewrote " + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
