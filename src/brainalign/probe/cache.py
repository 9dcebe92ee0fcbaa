"""On-disk cache of pooled features, keyed by content, never by a free-text name.

A key is the sha256 of the canonical JSON of its parts: the model identity (hash of the
architecture and weights), the preprocessing, the layer index, the pooling, the feature kind
and the stimulus set's content hash (plus any extra parts, such as the compute precision).
Each entry is ``<root>/<key[:2]>/<key>.npy`` with a ``<key>.json`` sidecar holding the parts;
both are written atomically (temporary file, then ``os.replace``).

Example::

    cache = FeatureCache("~/.cache/brainalign/features")
    parts = feature_key_parts(model_identity=model.identity, preprocess=model.preprocess.as_dict(),
                              layer=3, pooling="mean", stimulus_hash=stimuli.content_hash)
    array = cache.get(parts)  # None on a miss
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.utils.atomic import atomic_path

__all__ = [
    "FEATURE_KINDS",
    "REQUIRED_KEY_PARTS",
    "FeatureCache",
    "feature_key_parts",
    "features_through_cache",
]

FEATURE_KINDS: tuple[str, ...] = ("activation", "gradient", "language")
REQUIRED_KEY_PARTS: tuple[str, ...] = (
    "model",
    "preprocess",
    "layer",
    "pooling",
    "feature_kind",
    "stimuli",
)


def feature_key_parts(
    *,
    model_identity: str,
    preprocess: Mapping[str, Any],
    layer: int,
    pooling: str,
    stimulus_hash: str,
    feature_kind: str = "activation",
    **extra: Any,
) -> dict[str, Any]:
    """The parts of one cache key, as a JSON-serialisable dict.

    Parameters
    ----------
    model_identity : str
        ``ProbeModel.identity`` (hash of architecture and weights).
    preprocess : mapping
        ``Preprocess.as_dict()``.
    layer : int
    pooling : str
    stimulus_hash : str
        ``StimulusSet.content_hash``.
    feature_kind : {"activation", "gradient", "language"}
    **extra
        Further parts that change the features (e.g. ``precision``, a gradient loss name).
    """
    if feature_kind not in FEATURE_KINDS:
        raise ValueError(f"feature_kind must be one of {FEATURE_KINDS}, got {feature_kind!r}")
    return {
        "model": str(model_identity),
        "preprocess": dict(preprocess),
        "layer": int(layer),
        "pooling": str(pooling),
        "feature_kind": feature_kind,
        "stimuli": str(stimulus_hash),
        **extra,
    }


class FeatureCache:
    """Feature arrays on disk, one ``.npy`` per key.

    Parameters
    ----------
    root : str or Path
        Folder of the cache (created on the first write; ``~`` is expanded).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise NotADirectoryError(f"feature cache root {self.root} exists and is not a folder")

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r})"

    @staticmethod
    def key(key_parts: Mapping[str, Any]) -> str:
        """sha256 (hex) of the canonical JSON of ``key_parts``."""
        missing = [part for part in REQUIRED_KEY_PARTS if part not in key_parts]
        if missing:
            raise ValueError(
                f"cache key parts lack {missing}; build them with feature_key_parts(...)"
            )
        try:
            canonical = json.dumps(key_parts, sort_keys=True, separators=(",", ":"))
        except TypeError as error:
            raise ValueError(f"cache key parts must be JSON-serialisable: {error}") from error
        return hashlib.sha256(canonical.encode()).hexdigest()

    def path(self, key_parts: Mapping[str, Any]) -> Path:
        """Where the array of ``key_parts`` is (or would be) stored."""
        key = self.key(key_parts)
        return self.root / key[:2] / f"{key}.npy"

    def __contains__(self, key_parts: Mapping[str, Any]) -> bool:
        return self.path(key_parts).is_file()

    def get(self, key_parts: Mapping[str, Any]) -> np.ndarray | None:
        """The stored array, or None on a miss (an unreadable entry counts as a miss).

        Returns
        -------
        ndarray or None
        """
        path = self.path(key_parts)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            warnings.warn(
                f"unreadable feature cache entry {path} ({error}); recomputing", stacklevel=2
            )
            return None

    def put(self, key_parts: Mapping[str, Any], array: np.ndarray) -> Path:
        """Store ``array`` under ``key_parts`` atomically; returns the ``.npy`` path."""
        path = self.path(key_parts)
        array = np.asarray(array)
        if array.dtype == object:
            raise ValueError("feature cache stores numeric arrays only, got dtype object")
        sidecar = path.with_suffix(".json")
        description = {
            "key": path.stem,
            "parts": dict(key_parts),
            "shape": list(array.shape),
            "dtype": str(array.dtype),
        }
        with atomic_path(sidecar) as temporary:
            temporary.write_text(json.dumps(description, indent=2, sort_keys=True))
        with atomic_path(path) as temporary:
            np.save(temporary, array, allow_pickle=False)
        return path


def features_through_cache(
    cache: FeatureCache | None,
    layers: Sequence[int],
    compute: Callable[[list[int]], Mapping[int, np.ndarray]],
    *,
    n_rows: int,
    row_order: np.ndarray | None = None,
    **key_parts: Any,
) -> dict[int, np.ndarray]:
    """Per-layer features, read from the cache where present and computed (then stored) else.

    Parameters
    ----------
    cache : FeatureCache or None
        None: every layer is computed, nothing is stored.
    layers : sequence of int
    compute : callable
        list of missing layers -> {layer: ndarray of shape (n_rows, n_features)}; not called
        when every layer is cached.
    n_rows : int
        Rows a cached array must have (an entry of another size counts as a miss).
    row_order : ndarray of shape (n_rows,), optional
        Rows are stored in this order (``StimulusSet.canonical_order()``) and put back in the
        caller's order on reading, so a key made of an order-free set hash fits every order.
    **key_parts
        Everything :func:`feature_key_parts` takes except ``layer``.

    Returns
    -------
    dict of int to ndarray of shape (n_rows, n_features)
        In the order of ``layers``, rows in the caller's order.
    """
    layers = list(layers)
    restore = None if row_order is None else np.argsort(row_order)
    features: dict[int, np.ndarray] = {}
    keys: dict[int, dict] = {}
    if cache is not None:
        for layer in layers:
            keys[layer] = feature_key_parts(layer=layer, **key_parts)
            cached = cache.get(keys[layer])
            if cached is not None and cached.shape[0] == n_rows:
                features[layer] = cached if restore is None else cached[restore]
    missing = [layer for layer in layers if layer not in features]
    if missing:
        for layer, array in compute(missing).items():
            features[layer] = array
            if cache is not None:
                cache.put(keys[layer], array if row_order is None else array[row_order])
    return {layer: features[layer] for layer in layers}
