"""What every command does before it starts: resolve the model and the sources (the slow or
failing parts, so a bad one is a one-line error before any engine loads), and which streams each
engine takes."""

from __future__ import annotations

import logging
from pathlib import Path

from rtmon import engines as registry
from rtmon.config import Settings
from rtmon.errors import UserError
from rtmon.models import ModelRef


def prepare(settings: Settings) -> tuple[ModelRef, list]:
    """Resolve the model and the sources (the slow or failing parts), printing notices."""
    from rtmon.models import resolve_model
    from rtmon.sources import resolve_source

    log = logging.getLogger("rtmon")
    specs = [resolve_source(uri, cache_dir(settings)) for uri in settings.source.uri]
    name = settings.model.name
    if name == "auto" and all(spec.kind == "sample" for spec in specs):
        # The sample is rtmon's own scene: COCO weights see nothing in it, the demo detector does.
        name = "demo"
        log.info("the sample clip is rtmon's own scene: using the demo detector trained on it (--model overrides)")
    model = resolve_model(name, Path(settings.paths.engines_dir))
    if model.notice:
        log.warning(model.notice)
    return model, specs


def engine_streams(settings: Settings, engines: list[list[str]], sources: int) -> dict[str, set[int]]:
    """Which streams each engine takes: the baseline only `engine.baseline_streams` when given."""
    chosen = settings.engine.baseline_streams
    if not chosen:
        return {}
    bad = [s for s in chosen if not 0 <= s < sources]
    if bad:
        raise UserError(f"--baseline-streams: there is no stream {bad[0]} (streams are 0 to {sources - 1})")
    return {c[0]: set(chosen) for c in engines if registry.is_baseline(c[0])}


def cache_dir(settings: Settings) -> Path:
    return Path(settings.paths.cache_dir).expanduser() if settings.paths.cache_dir else Path.home() / ".cache" / "rtmon"
