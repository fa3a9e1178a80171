from __future__ import annotations

from pathlib import Path

import pytest

from rtmon.config import Settings, load_settings, parse_set_options, settings_to_toml
from rtmon.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_default_toml_spells_out_the_builtin_defaults():
    assert load_settings(ROOT / "configs" / "default.toml") == Settings()


def test_generated_toml_round_trips(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(settings_to_toml(Settings()))
    assert load_settings(path) == Settings()


def test_overrides_win_over_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[model]\nimgsz = 320\n[source]\nuri = "clip.mp4"\n')
    s = load_settings(path, {"model.imgsz": 480, "engine.live": ["baseline", "ort-cpu"]})
    assert s.model.imgsz == 480 and s.source.uri == ["clip.mp4"] and s.engine.live == ["baseline", "ort-cpu"]


def test_set_options_parse_like_toml():
    assert parse_set_options(["model.conf=0.4", "source.loop=true", "engine.live=['a','b']", "source.uri=clip.mp4"]) == {
        "model.conf": 0.4,
        "source.loop": True,
        "engine.live": ["a", "b"],
        "source.uri": "clip.mp4",
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.imgsz": 33}, "model.imgsz: Input should be a multiple of 32"),
        ({"model.conf": 2}, "model.conf: Input should be less than 1"),
        ({"bench.frames": "many"}, "bench.frames: Input should be a valid integer"),
        ({"model.colour": 1}, "model.colour: Extra inputs are not permitted"),
        ({"nosuch.key": 1}, "nosuch.key: unknown section 'nosuch'"),
        ({"imgsz": 1}, "imgsz: keys are written section.key"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(UserError) as err:
        load_settings(None, overrides)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nimgsz = ")
    with pytest.raises(UserError, match="not valid TOML"):
        load_settings(broken)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("model = 3\n")
    with pytest.raises(UserError, match="model: must be a table"):
        load_settings(wrong)


def test_set_without_equals_is_an_error():
    with pytest.raises(UserError, match=r"expected section\.key=value"):
        parse_set_options(["model.imgsz"])


def test_password_never_written_out():
    s = load_settings(None, {"mqtt.password": "hunter2"})
    assert "hunter2" not in settings_to_toml(s)
    assert "hunter2" not in repr(s)
