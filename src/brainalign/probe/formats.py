"""Brain data from a spec: :func:`load_brain` picks the loader, and loaders are registered here.

A spec is a path, whose format is recognised (a folder with ``responses.npy``: the generic fMRI
folder of :mod:`brainalign.probe.fmri_folder`; a ``*-epo.fif`` file: MEG epochs, read by
:mod:`brainalign.probe.meg_epochs`), or ``<prefix>:<location>?<options>`` for a named data set
(:mod:`brainalign.probe.datasets`) or a loader added with :func:`register_brain_loader`. The
readers and writers of both generic formats are re-exported here.

Example::

    brain, stimuli = load_brain("my_fmri_folder")
    brain, stimuli = load_brain("sub-01-epo.fif")  # stimuli is None without image_path
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from brainalign.probe.brain_data import BrainData
from brainalign.probe.fmri_folder import load_fmri_folder, write_fmri_folder
from brainalign.probe.meg import DEFAULT_MEG_PREPARATION, MEGPreparation
from brainalign.probe.meg_epochs import (
    is_epochs_file,
    load_meg_epochs,
    load_meg_epochs_with_metadata,
    read_meg,
    write_meg_epochs,
)
from brainalign.probe.stimuli import StimulusSet, resolve_image_path

__all__ = [
    "BrainLoader",
    "check_brain_spec",
    "load_brain",
    "load_fmri_folder",
    "load_meg_epochs",
    "load_meg_epochs_with_metadata",
    "register_brain_loader",
    "write_fmri_folder",
    "write_meg_epochs",
]

BrainLoader = Callable[..., tuple[BrainData, StimulusSet | None]]
"""A loader: ``loader(location: str, *, subject, meg_preparation) -> (BrainData, stimuli)``."""

_PREFIX_LOADERS: dict[str, BrainLoader] = {}


def register_brain_loader(prefix: str, loader: BrainLoader) -> None:
    """Make ``load_brain("<prefix>:<location>")`` call ``loader(location, **options)``.

    Parameters
    ----------
    prefix : str
        Letters, digits and dashes, e.g. ``"nsd"`` or ``"things-meg"``.
    loader : callable
        ``loader(location: str, *, subject, meg_preparation) -> (BrainData, StimulusSet | None)``
    """
    if len(prefix) < 2 or not prefix.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"a loader prefix is 2+ letters, digits or dashes; got {prefix!r}")
    _PREFIX_LOADERS[prefix.lower()] = loader


def _load_fmri_path(
    location: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    return load_fmri_folder(location, subject=subject)


def _load_meg_path(
    location: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    preparation = meg_preparation if meg_preparation is not None else DEFAULT_MEG_PREPARATION
    brain, first_rows = read_meg(location, preparation, subject)
    if "image_path" not in first_rows.columns:
        return brain, None
    folder = Path(location).parent
    paths = [
        resolve_image_path(
            folder, relative, where=f"{location} (epochs metadata, stimulus {stimulus_id!r})"
        )
        for stimulus_id, relative in zip(brain.stimulus_ids, first_rows["image_path"])
    ]
    return brain, StimulusSet.from_paths(brain.stimulus_ids, paths)


_PATH_LOADERS: list[tuple[str, Callable[[Path], bool], BrainLoader]] = [
    (
        "a folder with responses.npy (fMRI)",
        lambda p: (p / "responses.npy").is_file(),
        _load_fmri_path,
    ),
    ("a *-epo.fif file (MEG epochs)", lambda p: p.is_file() and is_epochs_file(p), _load_meg_path),
]


def load_brain(
    spec: str | Path,
    *,
    subject: str | None = None,
    meg_preparation: MEGPreparation | None = None,
) -> tuple[BrainData, StimulusSet | None]:
    """Load brain data from a path or a ``prefix:location`` spec.

    Parameters
    ----------
    spec : str or Path
        A folder with ``responses.npy`` (fMRI), a ``*-epo.fif`` file (MEG), or
        ``<prefix>:<location>?<options>`` for a loader added with
        :func:`register_brain_loader` (the named data sets ``nsd``, ``algonauts2023``,
        ``things-fmri`` and ``things-meg`` are always available; option syntax in
        :mod:`brainalign.probe.datasets.spec`). Every spec, paths included, accepts
        ``?roi_properties=a.csv,b.csv``: per-ROI property tables merged into ``brain.rois``.
    subject : str, optional
    meg_preparation : MEGPreparation, optional
        For MEG; default ``MEGPreparation()``.

    Returns
    -------
    brain : BrainData
    stimuli : StimulusSet aligned with the brain data, or None when the format does not say
        where the images are.
    """
    import brainalign.probe.datasets  # noqa: F401  (registers the named data set loaders)
    from brainalign.probe.datasets.spec import apply_roi_properties, pop_common_options

    text, roi_properties = pop_common_options(spec)
    brain, stimuli = _dispatch_brain(text, subject=subject, meg_preparation=meg_preparation)
    return apply_roi_properties(brain, roi_properties), stimuli


def _dispatch_brain(
    text: str, *, subject: str | None, meg_preparation: MEGPreparation | None
) -> tuple[BrainData, StimulusSet | None]:
    loader, location = _resolve_loader(text)
    return loader(location, subject=subject, meg_preparation=meg_preparation)


def _resolve_loader(text: str) -> tuple[BrainLoader, str]:
    """The loader of a spec and the location it receives (nothing is read)."""
    prefix, separator, location = text.partition(":")
    if separator and prefix.lower() in _PREFIX_LOADERS:
        return _PREFIX_LOADERS[prefix.lower()], location
    path = Path(text)
    expected = "; or ".join(
        [description for description, _, _ in _PATH_LOADERS]
        + [f"'{name}:...'" for name in sorted(_PREFIX_LOADERS)]
    )
    if not path.exists():
        raise FileNotFoundError(f"brain data not found: {path} (expected {expected})")
    for _, matches, loader in _PATH_LOADERS:
        if matches(path):
            return loader, text
    raise ValueError(f"unknown brain data format: {path}; expected {expected}")


def check_brain_spec(spec: str | Path) -> None:
    """Cheap checks of a brain data spec, before anything is read or written.

    The format must be known, and the file or folder it names must exist (for named data sets,
    the location before ``?``). Options are checked when the data set is loaded.

    Raises
    ------
    FileNotFoundError, ValueError
        The same errors :func:`load_brain` would raise for these mistakes.
    """
    import brainalign.probe.datasets  # noqa: F401  (registers the named data set loaders)
    from brainalign.probe.datasets.spec import pop_common_options

    text, _ = pop_common_options(spec)
    loader, location = _resolve_loader(text)
    if loader in _PREFIX_LOADERS.values():
        folder = Path(location.split("?", 1)[0])
        if not folder.exists():
            raise FileNotFoundError(f"brain data {str(spec)!r}: {folder} does not exist")
