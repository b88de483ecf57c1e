"""`radvis learn offline|online` and `radvis eval`."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path


def check_data(data) -> None:
    """Every --data root is an existing CRUW-layout tree (learner.data.DataError naming it otherwise): cheap
    (directory listing and annotations), so a wrong path fails before a teacher loads or --out is made."""
    from learner.data import DataError, discover
    from learner.multiroot import _roots
    for root in _roots(data):
        if not root.exists():
            raise DataError(f"{root}: no such directory (--data takes CRUW-layout roots: CRUW/ROD2021, `radvis "
                            f"synth --out DIR`, `radvis export SESSION --out DIR`)")
        discover(root)


def remove_if_empty(path) -> None:
    """A run directory this command created and left empty (it failed first) is removed: no litter."""
    p = Path(path)
    try:
        if p.is_dir() and not any(p.iterdir()):
            p.rmdir()
    except OSError:
        pass


def _offline(args) -> int:
    from learner.train_offline import run
    return run(args)


def _eval(args) -> int:
    from learner.evaluate import run
    return run(args)


def register(sub, common) -> None:
    p = sub.add_parser("learn", help="train the radar encoder against the frozen camera teacher")
    lsub = p.add_subparsers(dest="learn_command", metavar="MODE", required=True)
    o = lsub.add_parser("offline", parents=[common],
                        help="pretrain on a CRUW/ROD2021 tree (real or `radvis synth` output); "
                             "DDP: torchrun --nproc-per-node=N -m learner.train_offline ...")
    o.add_argument("--data", required=True, nargs="+", action="extend", metavar="DIR",
                   help="CRUW-layout root(s): CRUW/ROD2021, `radvis synth` output, `radvis export`ed sessions "
                        "(annotations optional: pretraining is label-free); several roots train as one set")
    o.add_argument("--out", required=True, help="run directory: checkpoints, metrics.jsonl, tb/, split.json")
    o.add_argument("--epochs", type=int, default=None, help="override learner.epochs")
    o.add_argument("--cache-dir", default=None, help="frozen-teacher key cache (default DATA/.radvis_cache)")
    o.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None,
                   help="overrides learner.device (auto = cuda if available)")
    o.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines (without a terminal, "
                                                         "progress is a plain line every 10 s)")
    o.set_defaults(func=_offline)
    try:
        online = importlib.import_module("learner.online.cli")
    except ImportError as e:
        # the online learner is optional: `learn offline` and `eval` must work without it
        online = None
        if not (isinstance(e, ModuleNotFoundError) and e.name == "learner.online.cli"):
            print(f"radvis: `learn online` unavailable: learner.online.cli failed to import: {e}", file=sys.stderr)
    if online is not None and hasattr(online, "register"):
        online.register(lsub, common)

    e = sub.add_parser("eval", parents=[common], help="linear probe, label efficiency, fine-tuning, t-SNE of a run",
                       description="Evaluate the radar encoder of a run on labelled data: linear probe of the learnt "
                                   "features vs random-init features vs a supervised baseline per label fraction, "
                                   "fine-tuning, t-SNE; writes report.md and PNGs. Both kinds of run work: an offline "
                                   "run (`radvis learn offline --out RUN`: RUN/best.pt, the epoch chosen by held-out "
                                   "InfoNCE, probed on the run's own held-out sequences when --data is its data) and "
                                   "an online run (`radvis learn online --out RUN`: RUN/encoder.pt, the latest export, "
                                   "or RUN/ckpt.pt; probed on a split of --data, e.g. a `radvis synth` set). The "
                                   "report says which kind it evaluated.")
    e.add_argument("--run", required=True, help="run directory of `radvis learn offline` or `radvis learn online`")
    e.add_argument("--data", required=True, nargs="+", action="extend", metavar="DIR",
                   help="labelled CRUW-layout root(s): the run's own data (its split.json is used), or another "
                        "labelled set the encoder never saw (split by learner.split / test_fraction / seed)")
    e.add_argument("--json", action="store_true", help="print the numbers as JSON on stdout")
    e.add_argument("--checkpoint", default=None, metavar="FILE",
                   help="checkpoint in the run dir: default best.pt for an offline run, encoder.pt for an online "
                        "one; ckpt.pt (the online learner's full checkpoint) works too")
    e.add_argument("--fractions", default=None, help="comma-separated label %% (default learner.label_fractions)")
    e.add_argument("--seeds", type=int, default=None, help="seeds per fraction (default learner.eval_seeds)")
    e.add_argument("--no-supervised", action="store_true", help="skip the supervised-from-scratch baseline")
    e.add_argument("--no-finetune", action="store_true", help="skip the fine-tuning curve")
    e.add_argument("--queue-sweep", default=None, metavar="K1,K2,...",
                   help="also pretrain short runs at these queue sizes and probe each (paper Fig. 4)")
    e.add_argument("--out", default=None, help="where report.md and PNGs go (default RUN/eval)")
    e.set_defaults(func=_eval)
