"""First contact (#16): what a new user meets at the edges. Config mistakes exit 2 naming the key, every CLI
entry point answers bad input with one line (no traceback, rc != 0), nothing succeeds silently on nothing,
paths do not depend on the working directory, and the example hardware configs validate.

CLI checks run `python -m radvis` from a temporary directory with this checkout on PYTHONPATH, as a user who
cloned the repository and runs it from elsewhere."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
UART_CFG = REPO / "drivers/ti/cfgs/radvis_iwr1843.cfg"
QUIET = ["--set", "rig.log_level='WARNING'"]


def radvis(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "radvis", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """rc != 0, exactly one line on stderr, no traceback; returns that line."""
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode != 0, (p.returncode, p.stdout[-500:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(lines) == 1, p.stderr[-2000:]
    return lines[0]


# ---- 1. the hardware recipe -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["iwr1843-uart-realsense.toml", "iwr1843-dca1000-realsense.toml"])
def test_example_hardware_configs_validate_and_pass_the_driver_checks(name, tmp_path):
    path = REPO / "configs" / name
    p = radvis(["config", "check", str(path)], tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"{path}: OK", p.stderr
    from drivers.camera import check_config as check_camera
    from drivers.ti.radar import check_config as check_radar
    from radvis import config as C
    cfg = C.load(path)
    assert "emulate-radar" not in cfg.rig.stages and "emulate-camera" not in cfg.rig.stages
    assert cfg.camera.driver == "realsense" and (cfg.camera.width, cfg.camera.height, cfg.camera.fps) == (640, 480, 30)
    check_camera(cfg.camera, cfg.source)
    # the serial ports stand in as files (no board here); everything else is checked as written
    (tmp_path / "ttyACM0").touch(), (tmp_path / "ttyACM1").touch()
    r = dataclasses.replace(cfg.radar, cli_port=str(tmp_path / "ttyACM0"),
                            data_port=str(tmp_path / "ttyACM1") if cfg.radar.mode == "uart" else "")
    rcfg = check_radar(r, cfg.source)
    assert rcfg.profile.frame_period_ms == 100.0


def _radar_mistake(tmp_path, sets):
    return radvis(["capture", "radar", *QUIET, "--set", f"endpoints.radar='ipc://{tmp_path}/r.sock'",
                   "--set", f"endpoints.control='ipc://{tmp_path}/c.sock'", "--set", "endpoints.view_stats=''",
                   *sum((["--set", s] for s in sets), [])], tmp_path)


@pytest.mark.parametrize("sets, key", [
    (["radar.mode='uart'", f"radar.cfg='{UART_CFG}'", "radar.ra_chirps=[]", "radar.data_port=''"], "radar.data_port"),
    (["radar.mode='uart'", f"radar.cfg='{UART_CFG}'", "radar.ra_chirps=[]", "radar.cli_port='/dev/radvis-no-such-tty'"],
     "radar.cli_port"),
    (["radar.dca_host='127.0.0.5'", "radar.dca_board='127.0.0.5'"], "radar.dca_host and radar.dca_board"),
    (["radar.mode='dca1000'", f"radar.cfg='{UART_CFG}'"], "radar.cfg"),
    (["radar.cfg='no-such.cfg'"], "radar.cfg"),
])
def test_radar_config_mistakes_exit_2_naming_the_key(tmp_path, sets, key):
    p = _radar_mistake(tmp_path, sets)
    line = one_line_error(p)
    assert p.returncode == 2 and line.startswith("radvis: config error: " + key), line


def test_serial_cli_port_with_the_default_dca_link_names_mode_and_board(tmp_path):
    """The issue's recipe: a real CLI port, mode left at dca1000 with the emulated DCA1000's loopback address."""
    tty = tmp_path / "ttyACM0"
    tty.touch()
    p = _radar_mistake(tmp_path, [f"radar.cli_port='{tty}'"])
    line = one_line_error(p)
    assert p.returncode == 2 and "radar.dca_board" in line and 'radar.mode = "uart"' in line, line


def test_camera_mode_that_realsense_has_not_exits_2(tmp_path):
    p = radvis(["capture", "camera", *QUIET, "--set", "camera.driver='realsense'",
                "--set", f"endpoints.camera='ipc://{tmp_path}/c.sock'"], tmp_path)
    line = one_line_error(p)
    assert p.returncode == 2 and "camera.width x camera.height" in line and "128x96" in line and "640x480" in line


def test_config_errors_are_not_retried_device_errors_are(tmp_path):
    from capture.daemon import run_capture
    from drivers.ti.radar import RadarError
    from radvis.config import ConfigError
    from radvis.transport import Publisher
    pub = Publisher(f"ipc://{tmp_path}/p.sock")
    stop = threading.Event()
    calls = []

    def vanished():
        calls.append(1)
        if len(calls) >= 3:
            stop.set()
        raise RadarError("CLI port gone")
    try:
        st = run_capture("radar", vanished, lambda f: f, pub, backoff_s=0.0, stop=stop)
        assert st.device_errors == 3 and len(calls) == 3   # a disconnect: reopened until stopped
        calls.clear()

        def mistake():
            calls.append(1)
            raise ConfigError("radar.data_port: empty")
        with pytest.raises(ConfigError):
            run_capture("radar", mistake, lambda f: f, pub, backoff_s=0.0, stop=threading.Event())
        assert len(calls) == 1                               # a mistake: never retried
    finally:
        pub.close()


# ---- 2. paths from any working directory ----------------------------------------------------------------

def test_packaged_paths_resolve_from_any_working_directory(tmp_path, monkeypatch):
    from radvis.config import REPO as PKG_ROOT, resolve_path
    monkeypatch.chdir(tmp_path)
    assert resolve_path("drivers/ti/cfgs/radvis_iwr1843.cfg") == PKG_ROOT / "drivers/ti/cfgs/radvis_iwr1843.cfg"
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mine.cfg").write_text(UART_CFG.read_text())
    assert resolve_path("mine.cfg", tmp_path / "conf" / "rig.toml") == tmp_path / "conf" / "mine.cfg"  # beside it
    p = radvis(["synth", "--out", "ds", "--sequences", "1", "--frames", "2", "--image-size", "64x48", "--quiet",
                "--no-preview"], tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert len(list((tmp_path / "ds" / "sequences" / "train").iterdir())) == 1
    # dca1000 parse: the input's own error, not a cfg path error that hid it
    line = one_line_error(radvis(["dca1000", "parse", "missing.pcap"], tmp_path))
    assert line == "radvis dca1000 parse: missing.pcap: no such file"
    (tmp_path / "empty.bin").write_bytes(b"")
    p = radvis(["dca1000", "parse", "empty.bin", "--json"], tmp_path)   # default radar.cfg found from here
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[-1])["type"] == "stats", p.stderr


# ---- 3. radar cfg / parse --cfg take files by any name -------------------------------------------------

def test_radar_cfg_reads_a_file_of_any_name_and_says_missing_or_directory(tmp_path):
    shutil.copy(UART_CFG, tmp_path / "good.txt")
    p = radvis(["radar", "cfg", "good.txt"], tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["profile"]["frame_period_ms"] == 100.0, p.stderr
    assert one_line_error(radvis(["radar", "cfg", "nope.cfg"], tmp_path)).endswith("nope.cfg: no such file")
    (tmp_path / "adir").mkdir()
    assert "is a directory" in one_line_error(radvis(["radar", "cfg", "adir"], tmp_path))
    (tmp_path / "x.dat").write_bytes(b"")
    line = one_line_error(radvis(["radar", "parse", "x.dat", "--cfg", "adir"], tmp_path))
    assert "--cfg adir: is a directory" in line


# ---- 4. --set before and after the subcommand ----------------------------------------------------------

def test_global_and_subcommand_set_both_apply_global_first(tmp_path):
    p = radvis(["--set", "camera.fps=15", "config", "show", "--set", "camera.width=64"], tmp_path)
    assert p.returncode == 0
    assert "\nfps = 15\n" in p.stdout and "\nwidth = 64\n" in p.stdout
    p = radvis(["--set", "camera.fps=15", "config", "show", "--set", "camera.fps=20"], tmp_path)
    assert "\nfps = 20\n" in p.stdout   # the subcommand's comes second: for one key it wins


# ---- 5. eval knows online runs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    """An online run directory as `radvis learn online` leaves it (encoder.pt, ckpt.pt's layout), without a
    split.json (it probed nothing), plus a labelled set to evaluate it on."""
    import torch

    from learner.models import build_radar_encoder
    from learner.teachers import build_teacher
    from radvis.config import LearnerConfig
    from tests.test_learner_data import make_tiny_cruw
    root = tmp_path_factory.mktemp("online")
    data = make_tiny_cruw(root / "data", n_frames=16)
    lc = LearnerConfig(radar_encoder="tiny", vision_encoder="tiny", device="cpu")
    dim = build_teacher(lc).dim
    model = build_radar_encoder("tiny", dim)
    run = root / "run"
    run.mkdir()
    cfgd = dataclasses.asdict(lc)
    torch.save({"format": "radvis-encoder-1", "source": "online", "model": model.state_dict(), "config": cfgd,
                "step": 40, "samples": 320, "epoch": 0, "feat_dim": int(model.feat_dim),
                "teacher": {"name": "tiny", "dim": dim, "center": torch.zeros(dim), "centered": False}},
               run / "encoder.pt")
    torch.save({"format": "radvis-online-1", "step": 40, "samples": 320, "radar_encoder": "tiny", "key_dim": dim,
                "teacher": "tiny", "model": model.state_dict(), "config": cfgd}, run / "ckpt.pt")
    return run, data


EVAL_FAST = ["--seeds", "3", "--fractions", "100", "--no-supervised", "--no-finetune", "--json"]


@pytest.mark.parametrize("ckpt", [None, "ckpt.pt"])
def test_eval_of_an_online_run_reports_it_as_one(online_run, tmp_path, ckpt):
    run, data = online_run
    out = tmp_path / "ev"
    p = radvis(["eval", "--run", str(run), "--data", str(data), "--out", str(out), *EVAL_FAST,
                *(["--checkpoint", ckpt] if ckpt else [])], tmp_path)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    res = json.loads(p.stdout.splitlines()[-1])
    assert res["run_kind"] == "online" and res["epoch"] is None and res["step"] == 40
    assert res["checkpoint"] == (ckpt or "encoder.pt")
    report = (out / "report.md").read_text()
    assert "online run (`radvis learn online`)" in report and "step 40" in report
    assert "chosen by held-out" not in report and "pretraining pairs" not in report
    # the verdict carries its uncertainty over >= 3 label seeds
    assert any("± " in v and "over 3 label seeds" in v for v in res["verdicts"]), res["verdicts"]
    assert "clusters are mostly single sequences" in report


def test_eval_errors_name_the_missing_thing(online_run, tmp_path):
    run, data = online_run
    line = one_line_error(radvis(["eval", "--run", "/no/such/run", "--data", str(data)], tmp_path))
    assert "--run /no/such/run: no such run directory" in line
    bad = tmp_path / "badrun"
    bad.mkdir()
    (bad / "ckpt.pt").write_bytes(os.urandom(256))
    line = one_line_error(radvis(["eval", "--run", str(bad), "--checkpoint", "ckpt.pt", "--data", str(data)], tmp_path))
    assert "not a radvis checkpoint" in line
    assert not (bad / "eval").exists()  # a failed eval leaves no empty report directory
    line = one_line_error(radvis(["eval", "--run", str(bad), "--data", str(data)], tmp_path))
    assert "neither best.pt" in line and "encoder.pt" in line
    h = radvis(["eval", "--help"], tmp_path).stdout
    assert "online run" in h and "offline run" in h and "encoder.pt" in h


def test_verdict_says_within_noise_and_refuses_with_too_few_seeds():
    from learner.evaluate import verdicts
    rows = [{"fraction": 5.0, "ssl": a, "random_init": b} for a, b in ((0.50, 0.49), (0.48, 0.50), (0.52, 0.50))]
    (v,) = verdicts(rows, [5.0])
    assert "within noise" in v and "over 3 label seeds" in v
    rows = [{"fraction": 5.0, "ssl": a, "random_init": 0.30} for a in (0.60, 0.62, 0.61)]
    assert verdicts(rows, [5.0])[0].endswith("self-supervised better")
    assert "no verdict" in verdicts(rows[:2], [5.0])[0]


# ---- 6./7. every entry point: one line for bad input, no silent success --------------------------------

@pytest.fixture(scope="module")
def junk(tmp_path_factory):
    d = tmp_path_factory.mktemp("junk")
    (d / "random.dat").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    (d / "empty.dat").write_bytes(b"")
    (d / "junk.mcap").write_bytes(os.urandom(4096))
    (d / "notcruw").mkdir()
    (d / "notcruw" / "readme.txt").write_text("hello")
    shutil.copy(UART_CFG, d / "good.cfg")
    return d


BAD_INPUT = {
    "radar cfg --sdk banana": (["radar", "cfg", "good.cfg", "--sdk", "banana"], "MAJOR.MINOR"),
    "radar cfg --sdk 3": (["radar", "cfg", "good.cfg", "--sdk", "3"], "MAJOR.MINOR"),
    "radar parse random": (["radar", "parse", "random.dat"], "no frames"),
    "radar parse empty": (["radar", "parse", "empty.dat", "--json"], "no frames in 0 bytes"),
    "record recover non-MCAP": (["record", "recover", "junk.mcap"], "not an MCAP recording"),
    "replay non-MCAP": (["replay", "junk.mcap", "--wait-subscribers", "0"], "not an MCAP recording"),
    "export non-MCAP": (["export", "junk.mcap", "--out", "exp"], "not an MCAP recording"),
    "learn offline non-CRUW": (["learn", "offline", "--data", "notcruw", "--out", "run1"], "not a CRUW/ROD2021 tree"),
    "learn offline missing": (["learn", "offline", "--data", "nowhere", "--out", "run2"], "nowhere: no such directory"),
    "synth bad size": (["synth", "--out", "s", "--image-size", "big"], "radvis synth"),
    "config check missing": (["config", "check", "nope.toml"], "no such config file"),
    "unknown section": (["--set", "camra.fps=1", "config", "show"], "unknown section 'camra', did you mean camera?"),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_each_entry_point_answers_bad_input_with_one_line(junk, name):
    argv, says = BAD_INPUT[name]
    line = one_line_error(radvis(argv + QUIET if argv[0] != "--set" else argv, junk))
    assert says in line, line
    for left in ("run1", "run2", "exp", "s", "junk.recovered.mcap"):
        assert not (junk / left).exists(), f"{name} left {left} behind"


def test_radar_parse_stats_are_json(junk):
    p = radvis(["radar", "parse", "random.dat"], junk)
    stats = p.stdout.strip().splitlines()[-1]
    assert stats.startswith("stats: ") and json.loads(stats[len("stats: "):])["frames"] == 0
    assert json.loads(stats[len("stats: "):])["bytes_in"] == 20000


def test_sync_with_its_port_in_use_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = radvis(["sync", "--duration", "1", *QUIET, "--set", f"endpoints.pairs='tcp://127.0.0.1:{port}'",
                    "--set", f"endpoints.radar='ipc://{tmp_path}/r'", "--set", f"endpoints.camera='ipc://{tmp_path}/c'",
                    "--set", f"endpoints.control='ipc://{tmp_path}/ctl'"], tmp_path)
    line = one_line_error(p)
    assert "Address already in use" in line and "[endpoints]" in line


def test_learn_online_without_sync_says_where_it_listened(tmp_path):
    ep = f"ipc://{tmp_path}/pairs.sock"
    p = radvis(["learn", "online", "--out", "run", "--endpoint", ep, "--first-pair-timeout", "1", *QUIET,
                "--set", "learner.radar_encoder='tiny'", "--set", "learner.vision_encoder='tiny'",
                "--set", "learner.online_live_eval_fraction=0", "--set", f"endpoints.control='ipc://{tmp_path}/c'",
                "--set", "endpoints.view_stats=''", "--set", f"endpoints.truth='ipc://{tmp_path}/t'"], tmp_path)
    line = one_line_error(p)
    assert p.returncode == 1 and f"no pairs received in 1 s: is sync running at {ep}?" in line
    assert not (tmp_path / "run" / "encoder.pt").exists()


# ---- 8. status table ----------------------------------------------------------------------------------

def test_status_table_pads_columns_and_says_what_the_learner_did():
    from rig.supervisor import status_table
    st = {"radar": {"state": "running", "pid": 123, "restarts": 0, "rate_per_s": 10.0, "total": 2400,
                    "unit": "frames", "mb_per_s": 0.66, "drops": 0, "lag_ms": 1.2, "errors": 0},
          "learner": {"state": "running", "pid": 12345, "restarts": 1, "rate_per_s": 3.2, "total": 812,
                      "unit": "steps", "mb_per_s": None, "drops": 3, "lag_ms": None, "errors": None,
                      "learner": {"step": 812, "pairs_in": 2300, "loss": 3.2114, "linear_acc": 0.4123}}}
    lines = status_table(st).splitlines()
    head, radar, learner = lines
    # padded: left-aligned columns start, right-aligned ones end, at the same offset on every line
    assert learner[head.index("detail"):].startswith("812 steps") and radar.index("running") == head.index("state")
    end = head.index("rate") + len("rate")
    assert radar[:end].endswith("10.0 frames/s") and learner[:end].endswith("3.2 steps/s")
    assert "10.0 frames/s" in radar and "2400 frames" in radar
    assert "3.2 steps/s" in learner and "812 steps, 2300 pairs in, loss 3.211, probe 41.2 %" in learner


def test_rig_report_shows_totals_and_mean_rates(tmp_path):
    from rig.cli import write_report
    status = {"stages": {"radar": {"state": "stopped", "restarts": 0, "rate_per_s": 8.75, "total": 2400,
                                   "unit": "frames", "mean_rate_per_s": 10.0, "drops": 0}}}
    text = write_report(tmp_path, status, None, None, 60.0, None).read_text()
    row = next(ln for ln in text.splitlines() if ln.startswith("| radar"))
    assert "2400 frames" in row and "10.00 frames/s" in row and "8.75" not in row


def test_label_efficiency_ticks_are_the_fractions(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    from unittest import mock

    import matplotlib.figure

    from learner import evaluate as ev
    table = [{"fraction": f, "ssl": (0.5, 0.01), "random_init": (0.3, 0.02)} for f in (1.0, 5.0, 25.0, 100.0)]
    seen = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def grab(fig, path, **kw):
        ax = fig.axes[0]
        seen["ticks"] = [t.get_text() for t in ax.get_xticklabels()]
        return real_savefig(fig, path, **kw)
    with mock.patch.object(matplotlib.figure.Figure, "savefig", grab):
        ev._plot_efficiency(table, tmp_path / "le.png")
    assert seen["ticks"] == ["1 %", "5 %", "25 %", "100 %"]


# ---- 9. logs and flags -----------------------------------------------------------------------------------

def test_progress_is_plain_lines_without_a_terminal(tmp_path):
    p = radvis(["synth", "--out", "ds", "--sequences", "2", "--frames", "3", "--image-size", "64x48",
                "--no-preview"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert "\r" not in p.stderr and "\r" not in p.stdout
    assert "synth: 6/6 frame (100 %)" in p.stderr   # the closing line of the periodic progress
    from radvis.log import PlainProgress, progress
    import io
    buf = io.StringIO()
    bar = progress(range(5), desc="epoch 1/1", unit="step", file=buf)
    assert isinstance(bar, PlainProgress)
    bar.interval_s = 0.0
    for _ in bar:
        bar.set_postfix(loss="1.000")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("epoch 1/1: 1/5 step (20 %)") and lines[-1].startswith("epoch 1/1: 5/5 step (100 %)")
    assert lines[-1].endswith("loss=1.000")


def test_version_and_learn_offline_device(tmp_path):
    from radvis import __version__
    p = radvis(["--version"], tmp_path)
    assert p.returncode == 0 and p.stdout.strip() == f"radvis {__version__}"
    from radvis.cli import build_parser
    a = build_parser().parse_args(["learn", "offline", "--data", "d", "--out", "o", "--device", "cpu"])
    assert a.device == "cpu"


def test_vgg16_missing_weights_hint_names_the_auto_fallback(monkeypatch, tmp_path):
    from learner import teachers
    from radvis.config import LearnerConfig
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(teachers.WeightsNotFoundError) as e:
        teachers.build_teacher(LearnerConfig(vision_encoder="vgg16", device="cpu"))
    # the teacher's name also carries its weights and region settings: the hint names the encoder
    auto = teachers.build_teacher(LearnerConfig(vision_encoder="auto", device="cpu")).name.split("[")[0]
    assert auto == teachers.AUTO_FALLBACK
    assert f"'{auto}'" in str(e.value) or f"`{auto}`" in str(e.value) or f" {auto} " in str(e.value), str(e.value)
