"""``brainalign chronology RUN [RUN ...]``: when does each metric, ROI and MEG window align?

A RUN is a training run folder holding ``chronology.parquet`` (written by BrainProbeCallback),
or a folder of teacher exports (``<run>/exports/step_*`` or the exports themselves), which are
then probed first against ``--brain``. Writes ``half_times.csv``, ``summary.json`` and figures.

The output folder is reserved before any run is read or probed (see ``brainalign probe``): a
second command writing the same ``--out`` fails at once, a read-only or misplaced ``--out``
fails before any work, and a temporary left by a killed command is removed by the next one.
The options that depend on the brain data or the model are checked on the first export
before any is probed.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

DESCRIPTION = (
    "Half time = training fraction at which a curve first reaches 50% of its final value (or, "
    "with the rise definition, 50% of its gain since the first probe). Runs without "
    "chronology.parquet are probed first: give the probe block (--config probe.yaml or "
    "--brain SPEC ...)."
)


def build_parser() -> Any:
    from brainalign.commands.probe_options import probe_parser

    parser = probe_parser("brainalign chronology", DESCRIPTION, with_model=False)
    parser.add_argument("runs", nargs="+", help="run folder(s) or exports folder(s)")
    parser.add_argument(
        "--out",
        type=str | None,
        default=None,
        help="output folder (default: RUN/chronology_report, or ./chronology_comparison for "
        "several runs)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument(
        "--roi_properties",
        type=str | None,
        default=None,
        help="CSV keyed by roi with property columns (expansion, thickness, myelin, "
        "timescale...) to correlate half times with (also --roi-properties)",
    )
    return parser


def main(argv: Sequence[str]) -> None:
    """Run ``brainalign chronology`` on ``argv`` (the arguments after ``chronology``)."""
    import contextlib

    from brainalign.commands import preflight
    from brainalign.commands.probe_options import parse
    from brainalign.probe.chronology import CHRONOLOGY_FILE

    _, options = parse(build_parser(), argv)
    runs = [Path(path) for path in options.runs]
    if options.out:
        out = Path(options.out)
    else:
        out = runs[0] / "chronology_report" if len(runs) == 1 else Path("chronology_comparison")
    preflight.check_new_output(out, overwrite=options.overwrite)
    missing = [path for path in runs if not path.exists()]
    if missing:
        raise FileNotFoundError(f"run folder {missing[0]} does not exist")
    if options.roi_properties and not Path(options.roi_properties).is_file():
        raise FileNotFoundError(
            f"ROI property table not found: {options.roi_properties} (--roi-properties)"
        )
    if any(not (path / CHRONOLOGY_FILE).is_file() for path in runs):
        preflight.check_cache_dir(options.probe.cache_dir)  # exports will be probed
    with contextlib.ExitStack() as stack:
        folder = preflight.reserve_output(stack, out, overwrite=options.overwrite)
        tables, rois, replicates = load_runs(runs, options.probe, checked=True)
        if options.roi_properties:
            from brainalign.probe.rois import merge_roi_properties

            rois = {
                subject: merge_roi_properties(table, options.roi_properties)
                for subject, table in rois.items()
            }
        report = analyse_runs(tables, rois, replicates, options.probe.bootstrap.level)
        report.write_files(folder, rois)
    print_report(report.times, report.summary)
    print(f"wrote {out}/half_times.csv, summary.json and figures")


def _run_name(path: Path) -> str:
    path = path.resolve()  # "." names the current folder
    return path.name if path.name != "exports" else path.parent.name


def _export_folders(path: Path) -> list[Path]:
    """Export folders of a run; hidden ones are exports still being written (or left by a kill)."""
    folder = path / "exports" if (path / "exports").is_dir() else path
    exports = sorted(
        p.parent for p in folder.glob("*/meta.json") if not p.parent.name.startswith(".")
    )
    if (folder / "meta.json").is_file():
        exports = [folder]
    return exports


def load_runs(
    runs: list[Path], config: Any, *, checked: bool = False
) -> tuple[dict[str, pd.DataFrame], dict, dict]:
    """Chronology tables by run name, ROI tables by subject, bootstrap resamples by run.

    ``config`` (a :class:`~brainalign.probe.config.ProbeConfig`) probes runs that hold exports
    but no ``chronology.parquet``; resamples exist where the probe had a bootstrap. With
    ``checked``, the options that depend on the brain data and the model are checked against
    the first export before any export is probed.
    """
    from brainalign.probe.chronology import CHRONOLOGY_FILE, read_chronology, replicates_file

    tables: dict[str, pd.DataFrame] = {}
    rois: dict[str, pd.DataFrame] = {}
    replicates: dict[str, pd.DataFrame] = {}
    targets = None
    for path in runs:
        if not path.exists():
            raise FileNotFoundError(f"run folder {path} does not exist")
        name = _run_name(path)
        if name in tables:
            name = str(path)
        if (path / CHRONOLOGY_FILE).is_file():
            tables[name] = read_chronology(path / CHRONOLOGY_FILE)
            resampled = path / replicates_file(CHRONOLOGY_FILE)
            if resampled.is_file():
                replicates[name] = pd.read_parquet(resampled)
            for csv in sorted((path / "brain_rois").glob("*.csv")):
                rois.setdefault(csv.stem, pd.read_csv(csv))
            continue
        exports = _export_folders(path)
        if not exports:
            raise FileNotFoundError(
                f"{path} holds neither chronology.parquet nor teacher exports "
                "(folders with meta.json + model.safetensors)"
            )
        if not config.brain:
            raise ValueError(
                f"{path} has no chronology.parquet: pass --brain SPEC to probe "
                f"its {len(exports)} exports"
            )
        if targets is None:
            from brainalign.probe.run import load_targets

            targets = load_targets(config)
            if checked:
                _check_on_first_export(config, targets, exports[0])
        tables[name], resampled = probe_exports(exports, config, targets)
        if not resampled.empty:
            replicates[name] = resampled
        for target in targets:
            brain = target.brain
            if brain.modality == "fmri" and brain.rois is not None and not brain.rois.empty:
                rois.setdefault(brain.subject, with_distance(brain.rois))
    return tables, rois, replicates


def _check_on_first_export(config: Any, targets: list, export: Path) -> None:
    from brainalign.commands import preflight
    from brainalign.probe.config import ModelSource
    from brainalign.probe.run import load_model

    preflight.check_against_targets(config, targets)
    model = load_model(ModelSource(spec=str(export)), config)
    preflight.check_against_model(config, model, targets[0].stimuli)


def with_distance(rois: pd.DataFrame) -> pd.DataFrame:
    from brainalign.probe.rois import distance_from_v1

    table = rois.copy()
    if "V1" in set(table["roi"].astype(str)):
        table["distance_from_v1"] = table["roi"].map(distance_from_v1(table))
    return table


def probe_exports(
    exports: list[Path], config: Any, targets: list
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every export; the rows (and bootstrap resamples) carry its step and fraction."""
    from tqdm.auto import tqdm

    from brainalign.probe.config import ModelSource
    from brainalign.probe.run import probe_model

    tables, resamples = [], []
    bars = sys.stderr.isatty()  # on a terminal; not in logs or pipes
    for export in tqdm(exports, desc="probing exports", unit="checkpoint", disable=not bars):
        meta = json.loads((export / "meta.json").read_text())
        step = int(meta.get("step", 0))
        fraction = float(meta.get("train_fraction", step / max(int(meta.get("max_steps", 1)), 1)))
        result = probe_model(
            ModelSource(spec=str(export)),
            config,
            targets=targets,
            progress=False,
            extra_columns={"step": step, "train_fraction": fraction, "status": "ok", "error": ""},
        )
        tables.append(result.table)
        resamples.append(result.replicates)
    return pd.concat(tables, ignore_index=True), pd.concat(resamples, ignore_index=True)


@dataclass
class ChronologyReport:
    """What ``brainalign chronology`` reports.

    Attributes
    ----------
    times : DataFrame
        One row per (run, data set, feature kind, curve): half times and first/last values.
    summary : dict
        Run -> ``subject/modality/kind`` -> the three scores and ROI half times.
    curves : DataFrame
        The curves over training (``curves.csv``).
    """

    times: pd.DataFrame
    summary: dict[str, Any]
    curves: pd.DataFrame

    def write_files(self, folder: Path, rois: dict[str, pd.DataFrame]) -> None:
        """``half_times.csv``, ``curves.csv``, ``summary.json`` and figures into ``folder``."""
        import matplotlib.pyplot as plt

        from brainalign.probe.report import chronology_curves, half_time_vs_distance
        from brainalign.probe.run import json_ready

        self.times.to_csv(folder / "half_times.csv", index=False)
        self.curves.to_csv(folder / "curves.csv", index=False)
        (folder / "summary.json").write_text(json.dumps(json_ready(self.summary), indent=2))
        figure = chronology_curves(self.curves)
        figure.savefig(folder / "curves.png", dpi=100)
        plt.close(figure)
        for subject, table in rois.items():
            if "distance_from_v1" not in table:
                continue
            subject_times = self.times[self.times["subject"] == subject]
            for run in subject_times["run"].unique():
                figure = half_time_vs_distance(
                    subject_times[subject_times["run"] == run], table, title=f"{run}: {subject}"
                )
                name = _file_part(f"half_time_vs_distance_{run}_{subject}")
                figure.savefig(folder / f"{name}.png", dpi=100)
                plt.close(figure)


def analyse_runs(
    tables: dict[str, pd.DataFrame],
    rois: dict[str, pd.DataFrame],
    replicates: dict[str, pd.DataFrame] | None = None,
    level: float = 0.95,
) -> ChronologyReport:
    """Half times (with bootstrap intervals when resamples exist), summary and curves."""
    from brainalign.probe.chronology import analyse

    times, summary, curves = analyse(tables, rois, replicates=replicates, level=level)
    return ChronologyReport(times=times, summary=summary, curves=curves)


def write_report(
    tables: dict[str, pd.DataFrame],
    rois: dict[str, pd.DataFrame],
    out: Path,
    *,
    overwrite: bool,
    replicates: dict[str, pd.DataFrame] | None = None,
    level: float = 0.95,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Analyse and write the report into ``out`` (atomically); returns (summary, times)."""
    from brainalign.utils.atomic import atomic_directory

    report = analyse_runs(tables, rois, replicates, level)
    with atomic_directory(out, overwrite=overwrite) as folder:
        report.write_files(folder, rois)
    return report.summary, report.times


def _file_part(text: str) -> str:
    """``text`` usable as a file name (a run named by its path, ``a/run``, has a slash)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "run"


def _fmt(value: Any) -> str:
    return "not reached" if value is None or value != value else f"{value:.3f}"


TEMPORAL_UNDEFINED = (
    "undefined at every probe: the layers' peak times (t_max in the chronology table) do not"
    " differ, or no layer has a positive peak"
)


def print_report(times: pd.DataFrame, summary: dict[str, Any]) -> None:
    """Half time per ROI and the three scores at the first and last probe."""
    for run, entries in summary.items():
        for key, entry in entries.items():
            print(f"[{run}] {key}")
            for curve in ("encoding", "spatial_score", "temporal_score"):
                if curve in entry:
                    values = entry[curve]
                    print(
                        f"  {curve:15s} first {values['first']:+.3f}  last {values['last']:+.3f}"
                        f"  half time {_fmt(values['half_time'])}"
                        f" (rise: {_fmt(values['half_time_rise'])})"
                    )
            subject, modality, kind = key.split("/")
            if modality == "meg" and "temporal_score" not in entry:
                print(f"  {'temporal_score':15s} {TEMPORAL_UNDEFINED}")
            rows = times[
                (times["run"] == run)
                & (times["subject"] == subject)
                & (times["modality"] == modality)
                & (times["feature_kind"] == kind)
                & times["curve"].str.contains("/")
            ]
            for row in rows.itertuples():
                print(
                    f"  {row.curve:18s} first {row.first_value:+.3f}  last {row.final_value:+.3f}"
                    f"  half time {_fmt(row.half_time)} (rise: {_fmt(row.half_time_rise)})"
                )
            for name, value in entry.get("roi_half_time_correlations", {}).items():
                text = "n/a (needs 3+ ROIs with differing half times)"
                text = text if value is None else f"{value:+.3f}"
                print(f"  r(half time, {name}) = {text}")
