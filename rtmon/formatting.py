"""How a figure reads when it is shown: one place for "n/a", units and the few number formats
every report, panel and overlay uses. A value rtmon could not measure is `None` and reads "n/a",
never a made-up 0."""

from __future__ import annotations

NA = "n/a"


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    """`value` in `spec` followed by `unit`, or "n/a" when it is not known."""
    return NA if value is None else f"{value:{spec}}{unit}"


def fmt_mib(value: float | None) -> str:
    """A memory figure in MiB, thousands separated: "1,024 MiB"."""
    return fmt(value, ",.0f", " MiB")
