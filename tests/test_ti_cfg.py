"""TI .cfg parsing, per-SDK validation and derived parameters (real Visualizer cfgs + the radvis cfg)."""
from __future__ import annotations

import json

import pytest

from drivers.ti.cfg import CfgError, parse_cfg
from radvis.cli import main as radvis_main

CFGS = "ti/AWR1632BOOST_mmWaveRadar/cfgs"
RADVIS_CFG = "drivers/ti/cfgs/radvis_iwr1843.cfg"


@pytest.fixture
def sdk36(shared_fixtures):
    return shared_fixtures / CFGS / "AWR1642-SDK_3_6_0.cfg"


def lineno_of(text: str, prefix: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(prefix))


def test_sdk36_fixture_derives_the_visualizer_header_values(sdk36):
    rc = parse_cfg(sdk36)             # CRLF line ends, % comments
    p = rc.profile
    assert rc.sdk == (3, 6)
    assert (p.num_adc_samples, p.num_rx, p.num_tx, p.num_loops, p.chirps_per_frame) == (256, 4, 2, 16, 32)
    assert (p.num_range_bins, p.num_doppler_bins, p.num_virtual) == (256, 16, 8)
    assert p.range_resolution_m == pytest.approx(0.0436, abs=5e-4)      # header: 0.044
    assert p.chirp_interval_us == pytest.approx(486.14)
    assert p.max_velocity_mps == pytest.approx(1.0, abs=0.05)            # header: 1
    assert p.velocity_resolution_mps == pytest.approx(0.125, abs=0.006)  # header: 0.13
    assert p.frame_period_ms == 100
    assert p.bytes_per_frame_raw == 256 * 4 * 32 * 4
    assert p.max_range_m == pytest.approx(299792458 * 5.209e6 / (2 * 70e12))
    assert rc.gui_monitor == {"subframe": -1, "detected_objects": 1, "log_mag_range": 1, "noise_profile": 0,
                              "range_azimuth_heatmap": 0, "range_doppler_heatmap": 0, "stats": 1}
    assert rc.commands[0] == "sensorStop" and rc.commands[-1] == "sensorStart"
    assert not any(c.startswith("%") for c in rc.commands)


def test_sdk21_fixture_uses_sdk2_syntax(shared_fixtures):
    path = shared_fixtures / CFGS / "AWR1642-SDK_2_1_0.cfg"
    rc = parse_cfg(path)
    assert rc.sdk == (2, 1)
    assert rc.profile.num_range_bins == 256
    text = path.read_text()
    # the same file is wrong for SDK 3 firmware: cfarCfg has one argument fewer; the error names the line
    with pytest.raises(CfgError) as e:
        parse_cfg(text, sdk=(3, 5))
    assert f":{lineno_of(text, 'cfarCfg')}:" in str(e.value)
    assert "cfarCfg takes 9 arguments on SDK 3.5, got 8" in str(e.value)


def test_sdk35_requires_calibdata_before_sensorstart(sdk36):
    text = sdk36.read_text().replace("calibData 0 0 0\n", "")
    with pytest.raises(CfgError) as e:
        parse_cfg(text)
    msg = str(e.value)
    assert f":{lineno_of(text, 'sensorStart')}: 'sensorStart'" in msg and "calibData" in msg
    # SDK 3.2 firmware did not need it
    assert parse_cfg(text, sdk=(3, 2)).sdk == (3, 2)


def test_bad_values_name_file_line_and_expectation(tmp_path, sdk36):
    text = sdk36.read_text()
    bad = tmp_path / "bad.cfg"
    bad.write_text(text.replace("profileCfg 0 77 429 7 57.14 0 0 70 1 256 5209 0 0 30",
                                "profileCfg 0 77 429 7 57.14 0 0 70 1 256 5209 0 0"))
    with pytest.raises(CfgError, match=rf"bad.cfg:{lineno_of(text, 'profileCfg')}: .*takes 14 arguments.*got 13"):
        parse_cfg(bad)
    bad.write_text(text.replace("57.14 0 0 70 1 256 5209", "30 0 0 70 1 256 5209"))   # ramp ends before sampling does
    with pytest.raises(CfgError, match="ends after rampEndTime"):
        parse_cfg(bad)
    bad.write_text(text.replace("chirpCfg 1 1 0 0 0 0 0 2", "chirpCfg 1 1 0 0 0 0 0 4"))   # TX2 not in channelCfg
    with pytest.raises(CfgError, match="txEnable 4 uses a TX not enabled"):
        parse_cfg(bad)
    bad.write_text(text.replace("frameCfg 0 1 16 0 100 1 0", "frameCfg 0 1 16 0 abc 1 0"))
    with pytest.raises(CfgError, match="expected a number, got 'abc'"):
        parse_cfg(bad)
    with pytest.raises(CfgError, match="cannot read"):
        parse_cfg(tmp_path / "missing.cfg")


def test_unknown_commands_are_warnings_not_errors(sdk36):
    rc = parse_cfg(sdk36.read_text().replace("sensorStart", "fancyNewCmd 1\r\nsensorStart"))
    assert len(rc.warnings) == 1 and "fancyNewCmd" in rc.warnings[0]


def test_radvis_default_cfg_is_cruw_like():
    rc = parse_cfg(RADVIS_CFG)
    p = rc.profile
    assert p.start_freq_ghz == 77 and p.num_adc_samples == 128 and p.sample_rate_ksps == 4000
    assert (p.num_tx, p.num_rx, p.num_virtual_azimuth) == (2, 4, 8)
    assert p.frame_period_ms == 100
    assert 25 < p.max_range_m < 30 and p.range_resolution_m == pytest.approx(0.223, abs=1e-3)
    # UART budget: the TLVs it asks for fit in one frame period at 921600 baud
    heatmap = p.num_range_bins * p.num_virtual_azimuth * 4
    assert (heatmap + 2 * 2 * p.num_range_bins + 40 + 7 * 8 + 24 + 28 + 64 * 20) * 10 / 921600 < p.frame_period_ms / 1000
    dca = parse_cfg("drivers/ti/cfgs/radvis_iwr1843_dca.cfg")
    assert dca.profile == p and "lvdsStreamCfg -1 0 1 0" in dca.commands


def test_cli_radar_cfg_prints_json(capsys, sdk36):
    assert radvis_main(["radar", "cfg", str(sdk36)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["derived"]["num_range_bins"] == 256 and d["sdk"] == "3.6"
    assert radvis_main(["radar", "cfg", str(sdk36), "--sdk", "2.1"]) == 2
    assert "cfarCfg takes 8 arguments on SDK 2.1, got 9" in capsys.readouterr().err
