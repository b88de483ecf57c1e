"""Security properties of the whole code base: no pickle on any data path, loopback by default,
checkpoints loaded with weights_only=True. (CURVE is exercised over real sockets in test_wire.py.)"""
import ast
import re
from pathlib import Path

from radvis import config as C

from .conftest import REPO

PACKAGES = ["radvis", "drivers", "capture", "sync", "learner"]


def sources():
    for pkg in PACKAGES:
        yield from sorted((REPO / pkg).rglob("*.py"))


def test_no_pickle_in_any_data_path():
    bad = []
    for p in sources():
        tree = ast.parse(p.read_text(), str(p))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("pickle", "cloudpickle", "dill", "shelve", "marshal") for n in names):
                    bad.append(f"{p.relative_to(REPO)}:{node.lineno} imports {names}")
            if isinstance(node, ast.Attribute) and node.attr in ("send_pyobj", "recv_pyobj"):
                bad.append(f"{p.relative_to(REPO)}:{node.lineno} uses {node.attr}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", False) is True:
                bad.append(f"{p.relative_to(REPO)}:{node.lineno} allow_pickle=True")
    assert not bad, "pickle on a data path:\n" + "\n".join(bad)


def test_torch_load_always_weights_only():
    bad = []
    for p in sources():
        tree = ast.parse(p.read_text(), str(p))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and getattr(node.func.value, "id", "") == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    bad.append(f"{p.relative_to(REPO)}:{node.lineno}")
    assert not bad, "torch.load without weights_only=True at: " + ", ".join(bad)


def test_default_endpoints_are_loopback_and_no_wildcard_binds_in_code():
    cfg = C.load(REPO / "config.toml")
    for name, ep in vars(cfg.endpoints).items():
        assert re.match(r"^(tcp://127\.0\.0\.1:\d+|ipc://)", ep), f"endpoints.{name} = {ep} is not loopback"
    assert cfg.radar.dca_host.startswith("127.")
    bad = [f"{p.relative_to(REPO)}" for p in sources()
           if re.search(r"""(tcp://\*|tcp://0\.0\.0\.0|bind\(\(\s*["'](0\.0\.0\.0)?["'])""", p.read_text())]
    assert not bad, f"wildcard bind in code (must come from config): {bad}"
