"""config.toml -> typed dataclasses: defaults, overrides, and error messages naming file/key/expected/got."""
import subprocess
import sys

import pytest

from radvis import config as C
from radvis.cli import main

from .conftest import REPO


def test_default_config_file_is_valid_and_matches_code_defaults():
    cfg = C.load(REPO / "config.toml")
    assert cfg.to_dict() == C.Config().to_dict(), "config.toml should spell out the code defaults"
    assert cfg.endpoints.radar.startswith("tcp://127.0.0.1:")  # loopback by default


def test_docs_config_md_is_generated_from_the_code():
    assert (REPO / "docs" / "config.md").read_text() == C.docs_markdown(), \
        "docs/config.md is stale: run `radvis config docs > docs/config.md`"


def write(tmp_path, text):
    p = tmp_path / "rig.toml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, key, expected, got", [
    ("[sync]\nmax_skew_ms = -3\n", "sync.max_skew_ms", "a number >= 0", "-3"),
    ("[camera]\nfps = \"thirty\"\n", "camera.fps", "an integer", "'thirty'"),
    ("[camera]\nfps = 30.5\n", "camera.fps", "an integer", "30.5"),
    ("[radar]\nmode = \"lvds\"\n", "radar.mode", "one of 'uart', 'dca1000'", "'lvds'"),
    ("[record]\nenabled = 1\n", "record.enabled", "a boolean", "1"),
    ("[learner]\nmomentum = 1.5\n", "learner.momentum", "a number <= 1", "1.5"),
    ("[rig]\nstages = [\"radar\", \"lidar\"]\n", "rig.stages", "a list of", "['radar', 'lidar']"),
])
def test_bad_values_name_file_key_expected_and_got(tmp_path, text, key, expected, got):
    p = write(tmp_path, text)
    with pytest.raises(C.ConfigError) as e:
        C.load(p)
    msg = str(e.value)
    assert msg.startswith(str(p) + ": " + key + ": expected "), msg
    assert expected in msg and msg.endswith("got " + got), msg


def test_unknown_key_and_section_are_errors(tmp_path):
    with pytest.raises(C.ConfigError, match=r"rig.toml: unknown key 'sync.max_skew', did you mean max_skew_ms\? "
                                            r"\(expected one of: max_skew_ms"):
        C.load(write(tmp_path, "[sync]\nmax_skew = 3\n"))
    with pytest.raises(C.ConfigError, match=r"rig.toml: unknown section 'lidar', .*\(expected one of: rig, "):
        C.load(write(tmp_path, "[lidar]\nx = 1\n"))
    # a typo gets the nearest section (difflib), as a first-time user needs
    with pytest.raises(C.ConfigError, match=r"rig.toml: unknown section 'camra', did you mean camera\?"):
        C.load(write(tmp_path, "[camra]\nfps = 15\n"))
    with pytest.raises(C.ConfigError, match=r"rig.toml: sync: expected a table"):
        C.load(write(tmp_path, "sync = 3\n"))


def test_removed_key_is_ignored_with_a_warning_naming_file_and_key(tmp_path, caplog):
    """learner.feature_dim never did anything; an old config that sets it still loads, and says so."""
    with caplog.at_level("WARNING", logger="radvis.config"):
        cfg = C.load(write(tmp_path, "[learner]\nfeature_dim = 128\nlr = 0.01\n"))
    assert cfg.learner.lr == 0.01 and not hasattr(cfg.learner, "feature_dim")
    assert "rig.toml: learner.feature_dim is ignored and can be deleted" in caplog.text
    assert "feature_dim" not in C.docs_markdown()


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(C.ConfigError, match="rig.toml: not valid TOML"):
        C.load(write(tmp_path, "[sync\n"))
    with pytest.raises(C.ConfigError, match="nope.toml: no such config file"):
        C.load(tmp_path / "nope.toml")


def test_overrides_are_typed_and_validated(tmp_path):
    p = write(tmp_path, "[camera]\nfps = 15\n")
    cfg = C.load(p, ["camera.fps=60", "sync.max_skew_ms=12.5", "radar.cli_port='/dev/ttyACM0'", "rig.stages=['radar']",
                     "camera.serial=123abc"])
    assert (cfg.camera.fps, cfg.sync.max_skew_ms, cfg.radar.cli_port) == (60, 12.5, "/dev/ttyACM0")
    assert cfg.rig.stages == ["radar"] and cfg.camera.serial == "123abc"
    with pytest.raises(C.ConfigError, match=r"--set camera.fps=0\): camera.fps: expected an integer >= 1, got 0"):
        C.load(p, ["camera.fps=0"])
    with pytest.raises(C.ConfigError, match="expected section.key=value"):
        C.load(p, ["fps=3"])


def test_config_show_roundtrips_through_toml(tmp_path, capsys):
    assert main(["config", "show", "--set", "camera.width=320", "--set", "radar.faults={drop_prob=0.5}"]) == 0
    out = capsys.readouterr().out
    p = write(tmp_path, out)
    cfg = C.load(p)
    assert cfg.camera.width == 320 and cfg.radar.faults == {"drop_prob": 0.5}


def test_cli_config_check_exit_codes(tmp_path):
    good = write(tmp_path, "[camera]\nfps = 15\n")
    r = subprocess.run([sys.executable, "-m", "radvis", "config", "check", str(good)], capture_output=True, text=True)
    assert r.returncode == 0 and "OK" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nfps = 0\n")
    r = subprocess.run([sys.executable, "-m", "radvis", "config", "check", str(bad)], capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{bad}: camera.fps: expected an integer >= 1, got 0" in r.stderr


def test_removed_keys_say_what_replaced_them(tmp_path):
    """Configs written for the in-driver emulators fail with the file, the key and what to do instead."""
    p = write(tmp_path, "[radar]\nemulated = true\n")
    with pytest.raises(C.ConfigError, match=r"rig.toml: radar.emulated: no longer a config key: the emulated board is "
                                            r"now its own rig stage: keep \"emulate-radar\" in rig.stages"):
        C.load(p)
    for driver in ("emulated-realsense", "generator"):
        with pytest.raises(C.ConfigError, match=rf"camera.driver: '{driver}' is no longer a choice: .*emulate-camera.*"
                                                r"camera.driver = \"mjpeg\""):
            C.load(None, [f"camera.driver='{driver}'"])
    with pytest.raises(C.ConfigError, match="capture.radar_output: no longer a config key: nothing read it"):
        C.load(None, ["capture.radar_output='ra'"])
    r = subprocess.run([sys.executable, "-m", "radvis", "config", "check", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and "radar.emulated: no longer a config key" in r.stderr


def test_default_rig_runs_emulated_devices_at_hardware_like_addresses():
    cfg = C.load()
    assert cfg.rig.stages[:2] == ["emulate-radar", "emulate-camera"]
    assert cfg.radar.cli_port.startswith("socket://") and cfg.camera.driver == "mjpeg"
    assert cfg.radar.dca_board != cfg.radar.dca_host                 # board and host: separate addresses
    assert "truth" in cfg.record.topics
