"""The typed description of a probe, with one set of defaults for every entry point.

``brainalign probe --config probe.yaml``, the training callback (``init_args.probe``) and the
studies read the same block, parsed from these dataclasses by jsonargparse, so a ``probe:``
section pasted from one file to another means the same thing::

    probe:
      brain: [data/simulated/fmri, data/simulated/meg/sim01-epo.fif]
      features: {layers: all, pooling: mean, kinds: [activation]}
      encoding: {n_folds: 5, inner: loo, alphas: [1, 10, 100]}
      cache_dir: .brainalign_cache

Defaults follow PAPERS.md where it states them (mean over patch tokens, every layer, 5 outer
folds, leave-one-out alphas 1e0..1e8, the model's own preprocessing) and are chosen here where
it is silent. Every field is checked when the object is built, so a bad value fails before any
model or brain data is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_LANGUAGE_ALPHAS",
    "DEFAULT_LANGUAGE_DEPTHS",
    "DEFAULT_MEG_WINDOWS",
    "FEATURE_KINDS",
    "GRADIENT_LOSSES",
    "METRICS",
    "METRICS_NEEDING_REPEATS",
    "PARTITION_SPACES",
    "POOLINGS",
    "BootstrapConfig",
    "CKAConfig",
    "EncodingConfig",
    "FeatureConfig",
    "Metric",
    "ModelSource",
    "Pooling",
    "PreprocessConfig",
    "ProbeConfig",
    "RSAConfig",
    "VariancePartitioningConfig",
]

Pooling = Literal["cls", "mean", "registers", "cls+mean"]
POOLINGS: tuple[str, ...] = ("cls", "mean", "registers", "cls+mean")
FeatureKind = Literal["activation", "gradient"]
FEATURE_KINDS: tuple[str, ...] = ("activation", "gradient")
GradientLoss = Literal["auto", "ssl", "invariance", "supervised"]
GRADIENT_LOSSES: tuple[str, ...] = ("auto", "ssl", "invariance", "supervised")
Interpolation = Literal["bicubic", "bilinear", "nearest"]
Layers = list[float] | int | Literal["all"]
Metric = Literal["encoding", "rsa", "cka", "cka_cv"]
METRICS: tuple[str, ...] = ("encoding", "rsa", "cka", "cka_cv")
#: Metrics that read single repeats (``BrainData.repeats``), and why.
METRICS_NEEDING_REPEATS: dict[str, str] = {"cka_cv": "cross-validated CKA splits the repeats"}
RDMDistance = Literal["correlation", "euclidean", "crossnobis"]
RDMComparison = Literal["spearman", "pearson", "kendall_tau_a"]
PartitionSpaces = Literal["kinds", "layers", "low_level"]
PARTITION_SPACES: tuple[str, ...] = ("kinds", "layers", "low_level")

DEFAULT_ALPHAS = np.logspace(0, 8, 10)
"""Ten log-spaced ridge penalties from 1e0 to 1e8 (Study A)."""

DEFAULT_LANGUAGE_ALPHAS = np.logspace(-4, 8, 13)
"""Study C's ridge penalties, 1e-4..1e8."""

DEFAULT_LANGUAGE_DEPTHS: tuple[float, ...] = tuple(np.round(np.linspace(0.1, 0.9, 9), 3))
"""Nine relative depths from 10% to 90% (Study C)."""

#: MEG windows of Study A's chronology (seconds).
DEFAULT_MEG_WINDOWS: tuple[tuple[float, float], ...] = ((0.08, 0.13), (0.13, 0.18), (0.5, 0.55))


def _check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")


@dataclass(frozen=True, kw_only=True)
class ModelSource:
    """Where a probed model comes from (the CLI and studies; the callback probes its module).

    Parameters
    ----------
    spec : str
        A brainalign teacher-export folder, a brainalign ``.ckpt``, ``timm:<name>``,
        ``torchvision:<name>`` or a Hugging Face model folder on disk.
    weights : str, optional
        Local weights file for ``timm:``/``torchvision:`` specs (``random``: a seeded random
        initialisation on purpose). Nothing is downloaded.
    network : {"teacher", "student"}
        Which backbone of a ``.ckpt`` to probe.
    allow_pickle : bool
        Allow unpickling files that hold Python objects (runs code in the file: only for
        files you trust).
    """

    spec: str
    weights: str | None = None
    network: Literal["teacher", "student"] = "teacher"
    allow_pickle: bool = False

    def __post_init__(self) -> None:
        if not str(self.spec).strip():
            raise ValueError("model spec is empty: give an export folder, .ckpt, timm:NAME, ...")
        _check_choice("network", self.network, ("teacher", "student"))


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """Overrides of the model's own preprocessing; None keeps what the model declares.

    The model's own preprocessing is timm's data config for timm models, the image processor
    of a Hugging Face folder, the weights' transforms for torchvision models, and the native
    resolution without crop (ImageNet mean/std, bicubic) for brainalign exports.

    Parameters
    ----------
    resolution : int, optional
        Side of the square model input in pixels.
    crop_pct : float, optional
        Fraction of the resized shorter side kept by the centre crop (1.0: the whole image).
    interpolation : {"bicubic", "bilinear", "nearest"}, optional
    mean, std : tuple of 3 float, optional
        Normalisation on the [0, 1] pixel scale.
    """

    resolution: int | None = None
    crop_pct: float | None = None
    interpolation: Interpolation | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.resolution is not None:
            _check_positive_int("preprocess.resolution", self.resolution)
        if self.crop_pct is not None and not 0.0 < float(self.crop_pct) <= 1.0:
            raise ValueError(f"preprocess.crop_pct must be in (0, 1]; got {self.crop_pct!r}")
        if self.interpolation is not None:
            _check_choice("preprocess.interpolation", self.interpolation, Interpolation.__args__)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ValueError(f"preprocess.{name} needs 3 values; got {value!r}")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"preprocess.std must be positive; got {self.std!r}")

    @property
    def overrides(self) -> dict[str, object]:
        """The fields that are set (not None)."""
        names = ("resolution", "crop_pct", "interpolation", "mean", "std")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Which features are probed.

    Parameters
    ----------
    layers : "all", int or list of float
        Every layer; that many evenly spaced relative depths (Study A uses 22); or explicit
        relative depths in [0, 1].
    pooling : {"cls", "mean", "registers", "cls+mean"}
        Token pooling; ``mean`` is the mean over patch tokens (PAPERS.md's default).
    final_norm : bool
        Apply the model's final norm to every probed layer's tokens, for every source that has
        one over the width of its layers (transformers: brainalign exports, timm, Hugging Face
        and torchvision ViTs); convolutional stages of different widths are left as they are.
    kinds : list of {"activation", "gradient"}
    gradient_loss : {"auto", "ssl", "invariance", "supervised"}
        Loss of gradient features: ``ssl`` (DINO + iBOT with a fixed teacher; a brainalign
        ``.ckpt`` or the training module), ``invariance`` (two seeded views, any model),
        ``supervised`` (classifier + ``labels``); ``auto``: ``ssl`` where available, else
        ``invariance``.
    labels : str, optional
        CSV with ``stimulus_id,label`` columns, for ``gradient_loss: supervised``.
    pca : int, optional
        PCA components per layer (fitted on all stimuli, unsupervised).
    batch_size : int
        Images per forward pass.
    """

    layers: Layers = "all"
    pooling: Pooling = "mean"
    final_norm: bool = True
    kinds: list[FeatureKind] = field(default_factory=lambda: ["activation"])
    gradient_loss: GradientLoss = "auto"
    labels: str | None = None
    pca: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check_layers(self.layers)
        _check_choice("features.pooling", self.pooling, POOLINGS)
        kinds = list(dict.fromkeys(self.kinds))
        if not kinds:
            raise ValueError("features.kinds is empty: use [activation], [gradient] or both")
        unknown = [kind for kind in kinds if kind not in FEATURE_KINDS]
        if unknown:
            raise ValueError(
                f"unknown feature kinds {unknown} in features.kinds: use activation, gradient"
            )
        object.__setattr__(self, "kinds", kinds)
        _check_choice("features.gradient_loss", self.gradient_loss, GRADIENT_LOSSES)
        if self.gradient_loss == "supervised" and "gradient" in kinds and not self.labels:
            raise ValueError(
                "features.gradient_loss supervised needs --labels FILE (features.labels): a CSV "
                "with stimulus_id,label columns"
            )
        if self.pca is not None:
            _check_positive_int("features.pca", self.pca)
        _check_positive_int("features.batch_size", self.batch_size)


def _check_layers(layers: object) -> None:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"features.layers must be 'all', an int or depths; got {layers!r}")
        return
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        if layers < 2:
            raise ValueError(
                f"features.layers={layers}: an int counts evenly spaced depths from 0 to 1 and "
                "must be >= 2; give [1.0] for the last layer only"
            )
        return
    values = list(layers)  # type: ignore[call-overload]
    if not values:
        raise ValueError("features.layers is an empty list: give relative depths in [0, 1]")
    bad = [value for value in values if not 0.0 <= float(value) <= 1.0 or math.isnan(value)]
    if bad:
        raise ValueError(f"features.layers: relative depths must lie in [0, 1]; got {bad}")


@dataclass(frozen=True, kw_only=True)
class EncodingConfig:
    """How features are mapped to brain data (see :func:`brainalign.probe.ridge.fit_encoding`).

    Parameters
    ----------
    alphas : list of float
        Ridge penalties (10 log-spaced values 1e0..1e8 by default, as in Study A).
    n_folds : int
        Outer folds for held-out scores.
    inner : "loo" or int
        Per-target alpha selection inside each training part: efficient leave-one-out
        (Study A's RidgeCV) or inner K-fold.
    backend : {"auto", "numpy", "torch", "torch_cuda"}
        "auto" uses ``torch_cuda`` when a GPU is there, else torch on the CPU.
    dtype : {"float32", "float64"}, optional
        Working dtype of the large products (None: float32 on torch, float64 on numpy).
    target_batch_size : int, optional
        Targets fitted at once (bounds memory).
    direction : {"encoding", "decoding"}
        model -> brain (default) or brain -> model (Study C).
    shuffle : bool
        Shuffle stimuli before the outer folds (default: contiguous folds).
    seed : int
        Seeds shuffled folds.
    """

    alphas: list[float] = field(default_factory=lambda: [float(a) for a in DEFAULT_ALPHAS])
    n_folds: int = 5
    inner: Literal["loo"] | int = "loo"
    backend: Literal["auto", "numpy", "torch", "torch_cuda"] = "auto"
    dtype: Literal["float32", "float64"] | None = None
    target_batch_size: int | None = None
    direction: Literal["encoding", "decoding"] = "encoding"
    shuffle: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        alphas = [float(alpha) for alpha in np.atleast_1d(np.asarray(self.alphas, dtype=float))]
        if not alphas or not all(math.isfinite(alpha) and alpha > 0 for alpha in alphas):
            raise ValueError(f"encoding.alphas must be positive finite numbers; got {alphas}")
        object.__setattr__(self, "alphas", alphas)
        _check_positive_int("encoding.n_folds", self.n_folds, minimum=2)
        if self.inner != "loo" and (
            isinstance(self.inner, bool) or not isinstance(self.inner, int) or self.inner < 2
        ):
            raise ValueError(
                f"encoding.inner must be 'loo' or a number of inner folds >= 2; got {self.inner!r}"
            )
        _check_choice("encoding.backend", self.backend, ("auto", "numpy", "torch", "torch_cuda"))
        if self.dtype is not None:
            _check_choice("encoding.dtype", self.dtype, ("float32", "float64"))
        if self.target_batch_size is not None:
            _check_positive_int("encoding.target_batch_size", self.target_batch_size)
        _check_choice("encoding.direction", self.direction, ("encoding", "decoding"))


@dataclass(frozen=True, kw_only=True)
class BootstrapConfig:
    """Confidence intervals by bootstrap over stimuli of the held-out predictions (no refit).

    Parameters
    ----------
    n_resamples : int
        Resamples of the stimuli (0: no intervals). Stimuli are drawn within each outer fold,
        and R is averaged over folds as the point estimate is.
    seed : int
        Seed of the resamples: the same seed and stimuli give the same resamples for every
        layer, checkpoint and model, so derived scores and half times are resampled jointly.
    level : float
        Coverage of the percentile intervals (``ci_low``, ``ci_high`` columns).
    """

    n_resamples: int = 0
    seed: int = 0
    level: float = 0.95

    def __post_init__(self) -> None:
        _check_positive_int("bootstrap.n_resamples", self.n_resamples, minimum=0)
        if not 0.0 < float(self.level) < 1.0:
            raise ValueError(f"bootstrap.level must be in (0, 1); got {self.level!r}")


@dataclass(frozen=True, kw_only=True)
class RSAConfig:
    """Options of the ``rsa`` metric (:mod:`brainalign.probe.metrics.rsa`).

    Parameters
    ----------
    distance : {"correlation", "euclidean", "crossnobis"}
        Dissimilarity of the brain RDMs (one per ROI, MEG time sample, and over all targets).
        ``crossnobis`` is cross-validated over the single repeats (needs ``BrainData.repeats``).
    model_distance : {"correlation", "euclidean"}, optional
        Dissimilarity of the layers' RDMs; default ``distance``, and ``euclidean`` when
        ``distance`` is ``crossnobis`` (a model has no repeats; crossnobis is a cross-validated
        squared Euclidean distance).
    comparison : {"spearman", "pearson", "kendall_tau_a"}
        How a layer's RDM is compared with a brain RDM.
    """

    distance: RDMDistance = "correlation"
    model_distance: Literal["correlation", "euclidean"] | None = None
    comparison: RDMComparison = "spearman"

    def __post_init__(self) -> None:
        _check_choice("rsa.distance", self.distance, RDMDistance.__args__)
        if self.model_distance is not None:
            _check_choice("rsa.model_distance", self.model_distance, ("correlation", "euclidean"))
        _check_choice("rsa.comparison", self.comparison, RDMComparison.__args__)

    @property
    def layer_distance(self) -> str:
        """The layers' RDM dissimilarity actually used."""
        if self.model_distance is not None:
            return self.model_distance
        return "euclidean" if self.distance == "crossnobis" else self.distance


@dataclass(frozen=True, kw_only=True)
class CKAConfig:
    """Options of the ``cka`` metric (linear CKA, :func:`brainalign.probe.metrics.linear_cka`).

    Parameters
    ----------
    unbiased : bool
        The unbiased HSIC estimator (default; the biased one tends to 1 with few stimuli and
        many dimensions). ``cka_cv`` is always unbiased.
    """

    unbiased: bool = True


@dataclass(frozen=True, kw_only=True)
class VariancePartitioningConfig:
    """Banded ridge (himalaya) on two feature spaces and their unique and shared variance.

    Parameters
    ----------
    spaces : {"kinds", "layers", "low_level"}, optional
        None (the default): no variance partitioning. ``kinds``: a layer's activations and
        its gradients (needs both in ``features.kinds``; Study B's question); ``layers``: two
        layers (``layers`` names them); ``low_level``:
        each probed layer against low-level image statistics
        (:func:`brainalign.synthetic.low_level.low_level_statistics` of the stimuli, resized
        to ``low_level_size`` pixels).
    layers : list of float, optional
        Relative depths in [0, 1]: the two layers of ``spaces: layers`` (required there), or
        the layers to partition for ``kinds`` and ``low_level`` (default every probed layer).
        Each depth picks the nearest probed layer.
    n_iter : int
        Candidate weightings of the two spaces (himalaya's random search).
    inner_folds : int
        Inner K-folds of himalaya's hyperparameter search.
    solver : {"auto", "primal", "kernel"}
    low_level_size : int
        Side in pixels of the images low-level statistics are computed on.
    """

    spaces: PartitionSpaces | None = None
    layers: list[float] | None = None
    n_iter: int = 20
    inner_folds: int = 5
    solver: Literal["auto", "primal", "kernel"] = "auto"
    low_level_size: int = 64

    def __post_init__(self) -> None:
        if self.spaces is not None:
            _check_choice("variance_partitioning.spaces", self.spaces, PARTITION_SPACES)
        if self.layers is not None:
            depths = [float(depth) for depth in self.layers]
            bad = [depth for depth in depths if not 0.0 <= depth <= 1.0 or math.isnan(depth)]
            if bad or not depths:
                raise ValueError(
                    "variance_partitioning.layers must be relative depths in [0, 1]; got "
                    f"{self.layers!r}"
                )
            object.__setattr__(self, "layers", depths)
        if self.spaces == "layers" and (self.layers is None or len(set(self.layers)) != 2):
            raise ValueError(
                "variance_partitioning.spaces: layers needs variance_partitioning.layers with "
                f"two different relative depths, e.g. [0.5, 1.0]; got {self.layers!r}"
            )
        _check_positive_int("variance_partitioning.n_iter", self.n_iter)
        _check_positive_int("variance_partitioning.inner_folds", self.inner_folds, minimum=2)
        _check_choice("variance_partitioning.solver", self.solver, ("auto", "primal", "kernel"))
        _check_positive_int("variance_partitioning.low_level_size", self.low_level_size, 16)

    @property
    def enabled(self) -> bool:
        """Whether a variance partitioning is asked for (``spaces`` set)."""
        return self.spaces is not None


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """Everything a probe needs besides the model: brain data, features, encoding, resources.

    Parameters
    ----------
    brain : list of str
        Brain data specs (a generic fMRI folder, an MEG ``-epo.fif``, or a named data set such
        as ``nsd:/data/NSD?subject=1``), read with :func:`brainalign.probe.formats.load_brain`.
    stimuli : str, optional
        Stimulus folder or table, for brain data that do not name their images.
    max_stimuli : int, optional
        Probe a fixed random subset of this many stimuli of each data set (seeded by
        ``subset_seed``); default every stimulus.
    subset_seed : int
    preprocess : PreprocessConfig
    features : FeatureConfig
    encoding : EncodingConfig
    meg_windows : list of (float, float)
        MEG windows in seconds reported as their own groups (default 80-130, 130-180,
        500-550 ms).
    metrics : list of {"encoding", "rsa", "cka", "cka_cv"}
        How each layer is compared with each group of targets (ROI, MEG time sample, all):
        ``encoding`` (the cross-validated ridge, R), ``rsa`` (RDM comparison), ``cka`` (linear
        CKA) and ``cka_cv`` (split-half cross-validated CKA; needs repeats). Every metric gets
        the same per-layer rows, best depths, spatial and temporal scores
        (:mod:`brainalign.probe.pipeline`).
    rsa : RSAConfig
    cka : CKAConfig
    variance_partitioning : VariancePartitioningConfig
        Banded ridge of two feature spaces and their unique / shared variance (off unless
        ``variance_partitioning.spaces`` is set).
    bootstrap : BootstrapConfig
        Confidence intervals of every score (off by default).
    cache_dir : str, optional
        Feature cache folder (None or "" disables the cache).
    device : str
        ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
    precision : {"auto", "float32", "bfloat16", "float16"}
        Compute precision of feature extraction (``auto``: bf16 autocast on CUDA, float32 on
        the CPU); features are float32 either way.
    """

    brain: list[str] = field(default_factory=list)
    stimuli: str | None = None
    max_stimuli: int | None = None
    subset_seed: int = 0
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    meg_windows: list[tuple[float, float]] = field(
        default_factory=lambda: [tuple(window) for window in DEFAULT_MEG_WINDOWS]
    )
    metrics: list[Metric] = field(default_factory=lambda: ["encoding"])
    rsa: RSAConfig = field(default_factory=RSAConfig)
    cka: CKAConfig = field(default_factory=CKAConfig)
    variance_partitioning: VariancePartitioningConfig = field(
        default_factory=VariancePartitioningConfig
    )
    cache_dir: str | None = ".brainalign_cache"
    device: str = "auto"
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "brain", [str(spec) for spec in self.brain])
        empty = [spec for spec in self.brain if not spec.strip()]
        if empty:
            raise ValueError("brain lists an empty spec: give a data folder, .fif or spec")
        if self.max_stimuli is not None:
            _check_positive_int("max_stimuli", self.max_stimuli, minimum=2 * self.encoding.n_folds)
        windows = [tuple(float(edge) for edge in window) for window in self.meg_windows]
        bad = [window for window in windows if len(window) != 2 or not window[0] < window[1]]
        if bad:
            raise ValueError(f"meg_windows must be (start, end) pairs with start < end; got {bad}")
        object.__setattr__(self, "meg_windows", windows)
        self._check_metrics()
        _check_choice("precision", self.precision, ("auto", "float32", "bfloat16", "float16"))
        if not str(self.device).strip():
            raise ValueError("device is empty: use auto, cpu or cuda")

    def _check_metrics(self) -> None:
        metrics = list(dict.fromkeys(str(metric) for metric in self.metrics))
        if not metrics:
            raise ValueError("metrics is empty: use [encoding] (the default), rsa, cka, cka_cv")
        unknown = [metric for metric in metrics if metric not in METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}: choose among {', '.join(METRICS)}")
        object.__setattr__(self, "metrics", metrics)
        if self.variance_partitioning.spaces == "kinds":
            missing = [kind for kind in FEATURE_KINDS if kind not in self.features.kinds]
            if missing:
                raise ValueError(
                    "variance_partitioning.spaces: kinds partitions activations against "
                    f"gradients, but features.kinds lacks {missing}: set features.kinds to "
                    "[activation, gradient], or use spaces: layers or low_level"
                )

    @property
    def repeats_needed(self) -> dict[str, str]:
        """What in this config reads single repeats of the brain data: {option: why}."""
        needed = {
            f"metrics: {metric}": why
            for metric, why in METRICS_NEEDING_REPEATS.items()
            if metric in self.metrics
        }
        if "rsa" in self.metrics and self.rsa.distance == "crossnobis":
            needed["rsa.distance: crossnobis"] = "crossnobis distances are cross-validated"
        return needed
