"""The names of one metric's rows, curves and summary entries (no dependencies).

Encoding keeps its historical names; every other metric ``m`` gets ``m`` per layer and
``<name>_m`` for its summary rows, so a table's encoding rows read the same whatever else was
probed (:mod:`brainalign.probe.pipeline` documents the rows).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ENCODING", "PARTITION_REGIONS", "MetricNames", "partition_curve"]


@dataclass(frozen=True)
class MetricNames:
    """The row, curve and summary names of one metric's scores.

    ``MetricNames("encoding")``: ``r`` per layer, ``encoding_score``, ``best_depth``,
    ``spatial_score``, ``t_max``, ``temporal_score``; curves ``encoding``, ``roi/V1``,
    ``spatial_score``. ``MetricNames("rsa")``: ``rsa`` per layer, ``score_rsa``,
    ``best_depth_rsa``, ``spatial_score_rsa``, ``t_max_rsa``, ``temporal_score_rsa``; curves
    ``rsa``, ``rsa/roi/V1``, ``rsa/spatial_score``.
    """

    metric: str

    @property
    def is_encoding(self) -> bool:
        return self.metric == "encoding"

    @property
    def layer(self) -> str:
        """Name of the per-layer rows."""
        return "r" if self.is_encoding else self.metric

    @property
    def score(self) -> str:
        """Name of the best layer's value over all targets."""
        return "encoding_score" if self.is_encoding else f"score_{self.metric}"

    def of(self, base: str) -> str:
        """``best_depth`` -> ``best_depth`` (encoding) or ``best_depth_<metric>``."""
        return base if self.is_encoding else f"{base}_{self.metric}"

    def curve(self, base: str = "") -> str:
        """Chronology curve: ``encoding``/``rsa`` for ``""``, else ``[<metric>/]<base>``."""
        if not base:
            return self.metric
        return base if self.is_encoding else f"{self.metric}/{base}"

    @property
    def roi_key(self) -> str:
        """Summary key of the best value per ROI."""
        return "roi_encoding" if self.is_encoding else "roi_score"


ENCODING = MetricNames("encoding")


#: The variance-partitioning rows that are followed over training (chronology, TensorBoard).
PARTITION_REGIONS: tuple[str, ...] = ("unique_variance", "shared_variance")


def partition_curve(metric: str, space: str, layer: int, group: str = "all") -> str:
    """Curve of one variance-partitioning row: ``<metric>/<space>[/layer_<i>][/roi|window/<g>]``.

    ``partition_curve("unique_variance", "gradient", 3)`` -> ``unique_variance/gradient/layer_3``;
    a partition of two layers (``layer = -1``, the layers named in ``space``) has no layer part;
    an ROI adds ``/roi/V1``, an MEG window ``/window/80-130ms``.
    """
    name = f"{metric}/{space}" + (f"/layer_{layer}" if layer >= 0 else "")
    if group == "all":
        return name
    return f"{name}/{'window' if group.endswith('ms') else 'roi'}/{group}"
