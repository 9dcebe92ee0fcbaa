"""Loading trials within memory: per-stimulus means filled while reading, and a peak check.

:class:`TrialAccumulator` fills the final arrays as the trials are read, one block (a session)
at a time: float32 running sums that become the per-stimulus means, and, when kept, the single
repeats in one preallocated ``(n_repeats, n_stimuli, n_targets)`` array of float32 or float16.
Nothing of the full size is allocated twice, and no float64 copy of it is made.

:class:`MemoryEstimate` lists a loader's largest allocations; :func:`check_memory` compares
their sum with :func:`available_memory` before anything heavy is read and refuses with one
line naming the estimate, the memory available and the options that lower it.

Private: the loaders (``nsd``) use it; the public API is in the loader modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "InsufficientMemoryError",
    "MemoryEstimate",
    "TrialAccumulator",
    "available_memory",
    "check_memory",
    "format_bytes",
]

REPEATS_DTYPES = {"float32": np.float32, "float16": np.float16}
"""``repeats_dtype`` option values and the dtypes they store."""
_NO_LIMIT = 1 << 60  # cgroup v1 reports "no limit" as a number near 2**63


class InsufficientMemoryError(MemoryError, ValueError):
    """A load refused before reading because its estimated peak exceeds the memory available.

    A ValueError too, so the command line prints its one line without a traceback.
    """


def format_bytes(n_bytes: float) -> str:
    """``13_107_360_000 -> "13.1 GB"`` (decimal units, as the benchmarks print)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n_bytes) >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{int(n_bytes)} B"


# ---------------------------------------------------------------------- accumulation
class TrialAccumulator:
    """Per-stimulus means (float32 running sums) and single repeats, filled trial by trial.

    Trials are added in the order they were recorded; the sums add them in that order, so the
    means equal ``np.stack(trials).mean(axis=0)`` of each stimulus's float32 trials exactly.
    Repeats are stored as they arrive (rank ``r`` = the stimulus's ``r``-th trial); slots a
    stimulus never fills stay NaN.

    Parameters
    ----------
    counts : ndarray of shape (n_stimuli,), int
        Trials that will be added per stimulus (the divisor of the means).
    n_targets : int
    n_repeats : int, optional
        Keep the first ``n_repeats`` trials of each stimulus; None keeps none.
    repeats_dtype : {"float32", "float16"}
        Storage of the kept repeats (float16 halves it; values beyond +-65504 are refused).
    """

    def __init__(
        self,
        counts: np.ndarray,
        n_targets: int,
        *,
        n_repeats: int | None = None,
        repeats_dtype: str = "float32",
    ) -> None:
        if repeats_dtype not in REPEATS_DTYPES:
            raise ValueError(f"repeats_dtype must be float32 or float16; got {repeats_dtype!r}")
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.min(initial=1) < 1:
            raise ValueError("every stimulus needs at least one trial to average")
        self.sums = np.zeros((self.counts.size, n_targets), dtype=np.float32)  # (n, T)
        self.repeats = None
        if n_repeats is not None:
            shape = (n_repeats, self.counts.size, n_targets)
            self.repeats = np.empty(shape, REPEATS_DTYPES[repeats_dtype])  # (R, n, T)
            for rank in range(n_repeats):  # only the slots no trial will fill: one pass less
                self.repeats[rank, self.counts <= rank] = np.nan

    def add(self, values: np.ndarray, rows: np.ndarray, ranks: np.ndarray, where: str) -> None:
        """Add a block of trials.

        One trial at a time (a row of ``values``) so that no temporary larger than one row is
        made, and trials of the same stimulus within the block add in order.

        Parameters
        ----------
        values : ndarray of shape (n_trials, n_targets), float32
        rows : ndarray of shape (n_trials,), int
            Stimulus row of each trial; -1 skips the trial.
        ranks : ndarray of shape (n_trials,), int
            How many earlier trials showed the same stimulus (0 for its first).
        where : str
            Names the block in the error for a value float16 cannot hold.
        """
        n_kept = 0 if self.repeats is None else self.repeats.shape[0]
        with np.errstate(over="raise"):
            for trial in np.flatnonzero(rows >= 0):
                row, rank = rows[trial], ranks[trial]
                self.sums[row] += values[trial]
                if rank >= n_kept:
                    continue
                try:
                    self.repeats[rank, row] = values[trial]
                except FloatingPointError:
                    largest = float(np.nanmax(np.abs(values[trial])))
                    raise ValueError(
                        f"{where}: a value of {largest:.6g} is beyond float16's range "
                        "(+-65504); use repeats_dtype=float32"
                    ) from None

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Divide the sums by the counts in place.

        Returns
        -------
        means : ndarray of shape (n_stimuli, n_targets), float32
        repeats : ndarray of shape (n_repeats, n_stimuli, n_targets), or None
        """
        self.sums /= self.counts[:, None].astype(np.float32)
        return self.sums, self.repeats


# ---------------------------------------------------------------------- estimate and check
@dataclass(frozen=True)
class MemoryEstimate:
    """The largest allocations a load makes, alive together at its peak.

    Parameters
    ----------
    parts : tuple of (str, int)
        ``(what, bytes)`` pairs, e.g. ``("data 10000 x 327684 float32", 13_107_360_000)``.
    """

    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return int(sum(size for _, size in self.parts))

    def describe(self) -> str:
        """``"13.1 GB (data ... 13.1 GB + one session ... 1.0 GB)"``."""
        listed = " + ".join(f"{what} {format_bytes(size)}" for what, size in self.parts if size)
        return f"{format_bytes(self.total)} ({listed})"


def _read_numbers(path: Path, keys: tuple[str, ...]) -> dict[str, int]:
    """``key value`` lines (``/proc/meminfo``, ``memory.stat``) for the given keys."""
    found: dict[str, int] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.replace(":", " ").split()
        if len(fields) >= 2 and fields[0] in keys and fields[1].isdigit():
            found[fields[0]] = int(fields[1]) * (1024 if fields[2:3] == ["kB"] else 1)
    return found


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (cgroup v2 without a limit) -> None


def _cgroup_headroom(root: Path) -> int | None:
    """Bytes left under this process's cgroup memory limit (SLURM job, container), if any.

    Usage counts page cache; its inactive part is reclaimable, so it is not counted.
    """
    try:
        lines = (root / "proc" / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return None
    headrooms = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, group = rest.partition(":")
        group = group.strip().lstrip("/")
        if hierarchy == "0" and not controllers:  # cgroup v2: the limit may sit on an ancestor
            base = root / "sys" / "fs" / "cgroup"
            folder = base / group
            while True:
                limit = _read_int(folder / "memory.max")
                usage = _read_int(folder / "memory.current")
                if limit is not None and usage is not None:
                    cache = _read_numbers(folder / "memory.stat", ("inactive_file",))
                    headrooms.append(limit - usage + cache.get("inactive_file", 0))
                if folder == base or base not in folder.parents:
                    break
                folder = folder.parent
        elif "memory" in controllers.split(","):  # cgroup v1
            folder = root / "sys" / "fs" / "cgroup" / "memory" / group
            if not folder.is_dir():  # a cgroup namespace shows its own group at the root
                folder = root / "sys" / "fs" / "cgroup" / "memory"
            stat = _read_numbers(
                folder / "memory.stat", ("hierarchical_memory_limit", "total_inactive_file")
            )
            limit = stat.get(
                "hierarchical_memory_limit", _read_int(folder / "memory.limit_in_bytes")
            )
            usage = _read_int(folder / "memory.usage_in_bytes")
            if limit is not None and limit < _NO_LIMIT and usage is not None:
                headrooms.append(limit - usage + stat.get("total_inactive_file", 0))
    return max(0, min(headrooms)) if headrooms else None


def available_memory(root: Path = Path("/")) -> int | None:
    """Bytes this process can still allocate without swapping, or None where unknown.

    Linux ``/proc/meminfo`` ``MemAvailable``, capped by the headroom under the process's
    cgroup memory limit (v2 ``memory.max`` of the group or an ancestor; v1
    ``hierarchical_memory_limit``), which is what a SLURM job or a container may use.
    Hand-written: psutil (not a dependency) reports the host's memory, not a cgroup's limit.

    Parameters
    ----------
    root : Path
        File-system root (a fake tree in tests).
    """
    meminfo = _read_numbers(root / "proc" / "meminfo", ("MemAvailable",))
    candidates = [meminfo.get("MemAvailable"), _cgroup_headroom(root)]
    known = [value for value in candidates if value is not None]
    return min(known) if known else None


def check_memory(
    estimate: MemoryEstimate,
    *,
    where: str,
    options: str,
    available: int | None,
) -> None:
    """Refuse a load whose estimated peak exceeds the memory available.

    Parameters
    ----------
    estimate : MemoryEstimate
    where : str
        Names the load (``"NSD subj01"``).
    options : str
        What lowers the estimate, ending with how to skip the check.
    available : int, optional
        Bytes available (:func:`available_memory`); None skips the check.

    Raises
    ------
    InsufficientMemoryError
        One line: the estimate with its parts, the memory available, the options.
    """
    if available is None or estimate.total <= available:
        return
    raise InsufficientMemoryError(
        f"{where}: loading needs about {estimate.describe()} but {format_bytes(available)} is "
        f"available; {options}"
    )
