"""``brainalign study``: declare a grid of runs in one file, run it, and compare the runs.

    brainalign study run configs/studies/demo.yaml        # make, submit and finish every run
    brainalign study run configs/studies/demo.yaml --no-wait   # SLURM: submit and return
    brainalign study status studies/demo                  # the study table
    brainalign study report studies/demo                  # tables, statistics, figures, report.md

``run`` is idempotent (finished runs are skipped, interrupted ones resumed, failed ones
resubmitted): run it again after a crash. ``probe-exports RUN`` is the after-training probe
job of one run, ``probe-language RUN`` the job of a language cell (the study submits them; they
can also be run by hand).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brainalign study",
        description="Factorial studies: a grid of training runs and/or model probes over named "
        "factors, launched locally or on SLURM, compared with confidence intervals and tests.",
        allow_abbrev=False,
    )
    commands = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    run = commands.add_parser("run", help="make and run every cell of a study file")
    run.add_argument("study", help="the study YAML file")
    run.add_argument("--out", help="study folder (default: the file's directory: or studies/NAME)")
    run.add_argument(
        "--no-wait", action="store_true", help="submit and return (run again for the probes)"
    )
    status = commands.add_parser("status", help="print the study table")
    status.add_argument("folder", help="the study folder")
    report = commands.add_parser("report", help="tables, statistics, figures and report.md")
    report.add_argument("folder", help="the study folder")
    report.add_argument("--out", help="report folder (default: FOLDER/report)")
    report.add_argument("--overwrite", action="store_true", help="replace an existing report")
    exports = commands.add_parser("probe-exports", help="probe one run's teacher exports")
    exports.add_argument("run", help="a run folder of a study")
    exports.add_argument(
        "--follow", action="store_true", help="probe new exports until the run's fit has ended"
    )
    language = commands.add_parser(
        "probe-language", help="probe one language cell's model (RUN/inputs/language.yaml)"
    )
    language.add_argument("run", help="a language run folder of a study")
    return parser


def main(argv: Sequence[str]) -> None:
    """Run ``brainalign study`` on ``argv`` (the arguments after ``study``)."""
    parser = build_parser()
    options = parser.parse_args(list(argv))
    if options.action == "run":
        from brainalign.study.config import load_study
        from brainalign.study.orchestrate import run_study
        from brainalign.study.table import format_table

        study = load_study(options.study)
        folder = Path(options.out) if options.out else study.folder
        table = run_study(study, study_dir=folder, wait=not options.no_wait)
        print(format_table(table))
        print(f"study table: {folder}/study.parquet; compare: brainalign study report {folder}")
    elif options.action == "status":
        from brainalign.study.table import format_table, read_table

        print(format_table(read_table(Path(options.folder))))
    elif options.action == "report":
        from brainalign.study.report import write_report

        out = write_report(
            Path(options.folder),
            out=Path(options.out) if options.out else None,
            overwrite=options.overwrite,
        )
        print(f"wrote {out}/report.md, tables and figures")
    elif options.action == "probe-language":
        probe_language_run(Path(options.run))
    else:
        probe_exports(Path(options.run), follow=options.follow)


def probe_language_run(run_dir: Path) -> Path:
    """The job of a language cell: probe its model as ``inputs/language.yaml`` says.

    Writes ``<run>/probe/`` (``scores.parquet``, ``replicates.parquet`` when there are
    resamples, ``summary.json``, ``figures/``) with
    :func:`~brainalign.probe.language_run.probe_language`, replacing what an earlier,
    interrupted attempt left; returns that folder.
    """
    from brainalign.probe.language_run import probe_language
    from brainalign.study.runs import read_language_inputs

    config = read_language_inputs(run_dir)
    result = probe_language(config, progress=False)
    out = result.write(run_dir / "probe", overwrite=True)
    for line in result.summary_lines():
        print(line)
    print(f"probed {config.model} (context {config.context_words} words): {out}")
    return out


def probe_exports(run_dir: Path, *, follow: bool = False, poll_s: float = 30.0) -> None:
    """Probe the teacher exports of a study run with the run's probe block.

    Appends to ``<run>/probe_exports/chronology.parquet`` (and the bootstrap resamples, and
    writes the ROI tables): the same tables the training callback writes. Exports already in it
    are not probed again. With ``follow``, new exports are probed as the fit writes them, until
    the fit's job has ended (a probe job running beside training).
    """
    import json
    import time

    from brainalign.commands.chronology import _export_folders
    from brainalign.commands.chronology import probe_exports as probe_all
    from brainalign.commands.probe_options import parse, probe_parser
    from brainalign.probe.chronology import (
        CHRONOLOGY_FILE,
        append_chronology,
        read_chronology,
        replicates_file,
        write_roi_tables,
    )
    from brainalign.probe.run import load_targets
    from brainalign.study.job_status import FINAL_STATES, read_job_status

    probe_file = run_dir / "inputs" / "probe.yaml"
    if not probe_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a study run folder: no {probe_file}")
    parser = probe_parser("probe-exports", "", with_model=False)
    _, options = parse(parser, ["--config", str(probe_file)])
    targets = load_targets(options.probe)
    out = run_dir / "probe_exports"
    out.mkdir(exist_ok=True)
    write_roi_tables(targets, out)
    chronology = out / CHRONOLOGY_FILE
    probed = 0
    while True:
        fit_ended = (read_job_status(run_dir) or {}).get("state") in FINAL_STATES
        done = set(read_chronology(chronology)["step"]) if chronology.is_file() else set()
        new = [
            export
            for export in _export_folders(run_dir)
            if int(json.loads((export / "meta.json").read_text()).get("step", 0)) not in done
        ]
        if new:
            table, replicates = probe_all(new, options.probe, targets)
            append_chronology(chronology, table)
            if not replicates.empty:
                append_chronology(out / replicates_file(), replicates)
            probed += len(new)
        if not follow or (fit_ended and not new):
            break
        time.sleep(poll_s)
    if not chronology.is_file():
        raise FileNotFoundError(f"{run_dir} has no teacher exports to probe (exports/step_*)")
    print(f"probed {probed} exports of {run_dir}: {chronology}")
