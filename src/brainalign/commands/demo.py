"""``brainalign demo``: the main job on the embedded default, with no download.

1. writes the simulated subject (``DATA/simulated``) when it is missing or out of date;
2. trains the tiny ViT on procedural images (shards written once to ``DATA/``) with the brain
   probe callback on (the packaged ``brainalign/configs/experiments/demo.yaml``, plus
   ``demo_long.yaml`` with ``--preset long``);
3. prints where the TensorBoard logs are (``runs/demo``), and the chronology summary.

Options:

- ``--data DIR`` (default ``data``): where the simulated subject and the procedural images
  live. The packaged configs name ``data/...`` paths (relative to the current folder); with
  another ``DIR`` the demo writes copies of them with those paths under ``DIR`` to
  ``DIR/configs/`` and trains with the copies (the command it prints runs them again).
- ``--max-steps N`` (N >= 1): train N steps instead of the preset's; the probe schedule and
  log-spaced checkpoints follow (``--max-steps 1`` probes steps 0 and 1). 0 is refused: the
  demo is about the chronology over training, and a run of no step has none (probe an
  untrained model with ``brainalign probe`` instead).
- ``--dry-run``: check the options and locations, say what would be simulated and run, and
  write nothing.

The configs are package data, read with :mod:`importlib.resources`, so the demo runs the same
from a checkout and from an installed package, from any current folder. The simulated subject
is up to date when its ``truth.json`` records the demo's settings (300 stimuli, 32 px, seed 0)
and the current readers accept every brain data set the config probes (a subject written
before a format change, e.g. image paths that leave their table's folder, is written again).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PRESETS = {"short": ("demo.yaml",), "long": ("demo.yaml", "demo_long.yaml")}
RUN_NAMES = {"short": "demo", "long": "demo_long"}
#: The folder the packaged configs' relative data paths start with.
CONFIG_DATA_ROOT = "data"
#: The simulated subject the configs probe (``DATA/simulated``).
SIMULATED_SETTINGS = {"n_stimuli": 300, "image_size": 32, "seed": 0}

CAVEAT = """\
What a run this short can and cannot show
- It shows the machinery: training, probing at log-spaced steps, TensorBoard curves, chronology.
- Early, low-level ROIs (V1, V2, V3, hV4) and the early MEG window (80-130 ms) gain within a few
  hundred steps; the spatial score, negative at initialisation, turns positive.
- ROIs driven by object category (FFC, PHA1, IFSp) stay near r = 0: a few minutes of CPU training
  do not learn the categories, so their half times are noise around zero (read the first/last
  values, not the half time) and the spatial and temporal scores mostly reflect early areas.
- `make demo-long` trains ten times longer: there the category ROIs leave zero after ~700-1,350
  steps (measured curve in the README)."""


def _steps(text: str) -> int:
    """``--max-steps``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be >= 1, got {value}: a run of no step has no chronology (score an untrained "
            "model with `brainalign probe` instead)"
        )
    return value


def add(subparsers: argparse._SubParsersAction) -> Callable[[argparse.Namespace], None]:
    parser = subparsers.add_parser(
        "demo",
        help="train the tiny ViT with the brain probe on the embedded default",
        description="Simulate a subject (once), train the tiny ViT on procedural images with "
        "the brain probe on, and print the chronology of alignment. Runs from any folder: the "
        "configs are package data; runs/ and --data are relative to the current folder.",
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="short")
    parser.add_argument(
        "--max-steps", type=_steps, help="train this many steps (>= 1) instead of the preset's"
    )
    parser.add_argument(
        "--data",
        default=CONFIG_DATA_ROOT,
        help="folder for the simulated subject and the procedural images (default: data)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep a previous run folder instead of starting afresh"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the options, print what would be simulated and run, write nothing",
    )

    def run(ns: argparse.Namespace) -> None:
        run_demo(ns)

    return run


# ---------------------------------------------------------------------- configs
@contextlib.contextmanager
def packaged_configs(preset: str) -> Iterator[list[Path]]:
    """The preset's config files from the installed package, as paths on disk."""
    from importlib.resources import as_file, files

    with contextlib.ExitStack() as stack:
        paths = []
        for name in PRESETS[preset]:
            resource = files("brainalign").joinpath("configs", "experiments", name)
            if not resource.is_file():
                raise FileNotFoundError(
                    f"demo config configs/experiments/{name} is missing from the brainalign "
                    "package; reinstall brainalign"
                )
            paths.append(stack.enter_context(as_file(resource)))
        yield paths


def relocate_data_paths(value: Any, data: Path) -> Any:
    """``value`` (a parsed YAML document) with every ``data/...`` string moved under ``data``."""
    if isinstance(value, dict):
        return {key: relocate_data_paths(item, data) for key, item in value.items()}
    if isinstance(value, list):
        return [relocate_data_paths(item, data) for item in value]
    prefix = f"{CONFIG_DATA_ROOT}/"
    if isinstance(value, str) and value.startswith(prefix):
        return str(data / value[len(prefix) :])
    return value


def relocated_config_text(source: Path, data: Path) -> str:
    """The YAML of ``source`` with its data paths under ``data``, and a header saying so."""
    import yaml

    document = relocate_data_paths(yaml.safe_load(source.read_text()), data)
    header = (
        f"# Written by `brainalign demo --data {data}` from brainalign/configs/experiments/"
        f"{source.name}\n# (the packaged file, with its {CONFIG_DATA_ROOT}/... paths under "
        f"{data}/). Comments are in the packaged file.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False)


def brain_specs(documents: list[Any]) -> list[str]:
    """Every ``probe.brain`` spec of the configs' callbacks (what training will read)."""
    specs: list[str] = []
    for document in documents:
        for callback in (document or {}).get("trainer", {}).get("callbacks", []) or []:
            probe = (callback.get("init_args") or {}).get("probe") or {}
            specs += [str(spec) for spec in probe.get("brain", []) if str(spec) not in specs]
    return specs


# ---------------------------------------------------------------------- simulated subject
def simulated_subject_problem(folder: Path, specs: list[str]) -> str | None:
    """Why the simulated subject in ``folder`` cannot be used (None when it is up to date).

    Parameters
    ----------
    folder : Path
        ``DATA/simulated``.
    specs : list of str
        The brain data specs the config probes (read with the current readers).
    """
    from brainalign.probe.formats import load_brain

    truth = folder / "truth.json"
    if not truth.is_file():
        return f"{truth} does not exist"
    try:
        recorded = json.loads(truth.read_text())
    except (OSError, ValueError) as error:
        return f"{truth} cannot be read ({error})"
    differing = {
        key: recorded.get(key)
        for key, value in SIMULATED_SETTINGS.items()
        if recorded.get(key) != value
    }
    if differing:
        return f"it was simulated with {differing}, the demo uses {SIMULATED_SETTINGS}"
    for spec in specs:
        try:
            load_brain(spec)
        except (ValueError, KeyError, OSError) as error:
            return f"{spec} is refused by the current readers ({error})"
    return None


# ---------------------------------------------------------------------- the demo
def run_demo(ns: argparse.Namespace) -> None:
    import yaml

    from brainalign.commands.preflight import check_writable_folder

    data = Path(ns.data)
    check_writable_folder(ns.data, "--data")
    check_writable_folder("runs", "the run folder (runs/ in the current folder)")
    with packaged_configs(ns.preset) as packaged:
        relocated = data != Path(CONFIG_DATA_ROOT)
        configs = [data / "configs" / path.name for path in packaged] if relocated else packaged
        texts = [
            relocated_config_text(path, data) if relocated else path.read_text()
            for path in packaged
        ]
        specs = brain_specs([yaml.safe_load(text) for text in texts])
        simulated = data / "simulated"
        problem = simulated_subject_problem(simulated, specs)
        run_dir = Path("runs") / RUN_NAMES[ns.preset]
        args = ["fit"] + [part for config in configs for part in ("--config", str(config))]
        if ns.max_steps is not None:
            args += ["--trainer.max_steps", str(ns.max_steps)]
        if ns.dry_run:
            _print_plan(ns, configs, relocated, simulated, problem, run_dir, args)
            return
        if relocated:
            _write_configs(configs, texts)
        _run(ns, simulated, problem, run_dir, args)


def _print_plan(
    ns: argparse.Namespace,
    configs: list[Path],
    relocated: bool,
    simulated: Path,
    problem: str | None,
    run_dir: Path,
    args: list[str],
) -> None:
    verb = "would write" if relocated else "uses"
    for config in configs:
        print(f"[demo] {verb} the config {config}")
    if problem is None:
        print(f"[demo] would reuse the simulated subject in {simulated}")
    else:
        print(f"[demo] would write the simulated subject to {simulated} ({problem})")
    if run_dir.exists() and not ns.keep:
        print(f"[demo] would remove the previous {run_dir}")
    print(f"[demo] would run: brainalign {' '.join(args)}")
    print("[demo] dry run: nothing was written")


def _write_configs(configs: list[Path], texts: list[str]) -> None:
    from brainalign.utils.atomic import atomic_path

    for config, text in zip(configs, texts):
        with atomic_path(config) as temporary:
            temporary.write_text(text)


def _run(
    ns: argparse.Namespace, simulated: Path, problem: str | None, run_dir: Path, args: list[str]
) -> None:
    import torch

    from brainalign.cli import run_lightning
    from brainalign.probe.simulate import simulate_subject

    if not torch.cuda.is_available():
        # One compute thread beside the data worker: on a small CPU machine more threads spin
        # against each other (measured several times slower on 2 cores).
        torch.set_num_threads(1)
    if problem is None:
        print(f"[demo] reusing the simulated subject in {simulated}")
    else:
        print(f"[demo] writing the simulated subject to {simulated} ({problem})")
        simulate_subject(simulated, **SIMULATED_SETTINGS, overwrite=True)
    if run_dir.exists() and not ns.keep:
        print(f"[demo] removing the previous {run_dir}")
        shutil.rmtree(run_dir)
    print(f"[demo] brainalign {' '.join(args)}")
    run_lightning(args)

    from brainalign.commands.chronology import load_runs, print_report, write_report
    from brainalign.probe.config import ProbeConfig

    report = run_dir / "chronology_report"
    tables, rois, replicates = load_runs([run_dir], ProbeConfig())
    summary, times = write_report(tables, rois, report, overwrite=True, replicates=replicates)
    print("\n== Chronology of alignment (half time = fraction of training) ==")
    print_report(times, summary)
    print(f"\nTensorBoard logs: {run_dir}\n  open them with: tensorboard --logdir {run_dir.parent}")
    print(f"Chronology: {run_dir}/chronology.parquet, report in {report}/\n")
    if ns.preset == "short":
        print(CAVEAT)
