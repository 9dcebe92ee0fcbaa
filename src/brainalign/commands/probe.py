"""``brainalign probe``: score one model against fMRI / MEG data, offline.

    brainalign probe --model runs/demo/exports/step_0000500 \\
        --brain data/simulated/fmri --brain data/simulated/meg/sim01-epo.fif --out out/probe
    brainalign probe --config probe.yaml --probe.features.pooling cls
    brainalign probe --config probe.yaml --print_config

The options are the typed probe block (:class:`~brainalign.probe.config.ProbeConfig`) and the
model source (:class:`~brainalign.probe.config.ModelSource`), parsed with jsonargparse; the
shorter flags of earlier versions (``--brain``, ``--n-folds``...) keep working.

Everything is checked before any feature is extracted, cheapest first
(:mod:`brainalign.commands.preflight`): the options as they are parsed, the output folder and
the feature cache folder, the model spec, then the brain data and stimuli (and the options that
depend on them), then the options that depend on the loaded model. The output folder is
reserved before the model or any brain data is read: its hidden temporary folder
(``.OUT.tmp-<host>-<pid>-<token>``) is created at once, so a second probe writing the same
``--out`` fails immediately; it is renamed to ``--out`` at the end and removed on an error. A
temporary left by a killed probe is removed by the next one that writes there. Progress bars
are shown when stderr is a terminal, so a log or a pipe receives only the results and, on bad
input, the one error line.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DESCRIPTION = (
    "Extract features of every requested layer, fit cross-validated ridge encoders per layer "
    "and write scores.parquet, summary.json and figures. Options: --config probe.yaml, "
    "--print_config, dotted keys (--probe.features.pooling cls); --model SPEC, --brain SPEC "
    "(repeatable), --n-folds, --layers... as shorthands."
)


def build_parser() -> Any:
    from brainalign.commands.probe_options import probe_parser

    parser = probe_parser("brainalign probe", DESCRIPTION, with_model=True)
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


def ssl_objective_for(source: Any) -> Any:
    """How to build the SSL gradient objective of a model source (a brainalign ``.ckpt``)."""
    from brainalign.models.export import META_FILE
    from brainalign.probe.run import SSLObjective

    path = Path(str(source.spec))
    if path.suffix == ".ckpt" and path.is_file():

        def make() -> Any:
            from brainalign.train.gradient_objective import DinoGradientObjective

            return DinoGradientObjective.from_checkpoint(path, allow_pickle=source.allow_pickle)

        return SSLObjective(make=make)
    if path.is_dir() and (path / META_FILE).is_file():
        return SSLObjective(
            reason=f"needs the DINO/iBOT heads, and {source.spec} is a teacher export without "
            "the DINO/iBOT heads (probe the run's .ckpt for the SSL loss)"
        )
    return SSLObjective(
        reason=f"needs a brainalign .ckpt (it holds the DINO/iBOT heads); {source.spec!r} is "
        "not one"
    )


def main(argv: Sequence[str]) -> None:
    """Run ``brainalign probe`` on ``argv`` (the arguments after ``probe``)."""
    import contextlib

    from brainalign.commands import preflight
    from brainalign.commands.probe_options import parse

    _, options = parse(build_parser(), argv)
    config, source = options.probe, options.model
    if source.spec is None:
        raise ValueError("give the model to probe: --model SPEC (or model.spec in --config)")
    if not config.brain:
        raise ValueError("give at least one --brain SPEC (or probe.brain in --config)")
    out = Path(options.out)
    preflight.check_new_output(out, overwrite=options.overwrite)
    preflight.check_cache_dir(config.cache_dir)
    from brainalign.probe.models import check_model_spec
    from brainalign.probe.run import load_model, load_targets, probe_loaded_model

    check_model_spec(source.spec, weights=source.weights)  # before any brain data is read
    with contextlib.ExitStack() as stack:
        folder = preflight.reserve_output(stack, out, overwrite=options.overwrite)
        targets = load_targets(config)
        preflight.check_against_targets(config, targets)
        model = load_model(source, config)
        preflight.check_against_model(config, model, targets[0].stimuli)
        run = probe_loaded_model(
            model,
            targets,
            config,
            model_name=source.spec,
            ssl=ssl_objective_for(source),
            progress=sys.stderr.isatty(),  # bars on a terminal; not in logs or pipes
        )
        run.write_files(folder)
    for line in run.summary_lines():
        print(line)
    print(f"wrote {out}/scores.parquet, summary.json and figures/")
