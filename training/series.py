"""Training curves at iteration resolution: how often a point is taken, how the points
are stored, and how a long series is cut down to what a chart can draw.

Pure numpy, no Django and no JAX: the engine takes its step interval from here, the job
appends the points to a file, the web process reads them back.

A run's points live in one binary file of fixed-size records (``RECORD``) under the
experiment's directory, appended a few hundred bytes at a time: no database row per step
(a million steps would be a million rows), no rewriting of a growing blob, and a reader
that needs every point (the CSV download) or a slice (a zoomed chart) memory-maps it.
"""

import math
import os

import numpy as np

# At least this many training-loss points per epoch, as DIGITS plotted them ...
POINTS_PER_EPOCH = 50
# ... and at most this many a run: K grows for long runs (2.4 MB of records).
MAX_POINTS = 100_000
# A chart gets at most this many points a series: more adds nothing a screen shows.
CHART_POINTS = 2000
# A live "steps" event carries at most this many of the points since the last one.
LIVE_POINTS = 200

# The file's name in the experiment's directory.
FILE_NAME = "steps.bin"
# step: batches taken since the run began, at the end of the point's window; time: the
# Unix time that step was taken; loss and accuracy: means over the window's batches.
RECORD = np.dtype([("step", "<i8"), ("time", "<f8"), ("loss", "<f4"), ("accuracy", "<f4")])


def step_interval(steps_per_epoch: int, epochs: int) -> int:
    """K, the batches per point: an epoch gets at least POINTS_PER_EPOCH points (all of
    its batches when it has fewer), the run at most MAX_POINTS."""
    k = max(1, steps_per_epoch // POINTS_PER_EPOCH)
    return max(k, math.ceil(steps_per_epoch * epochs / MAX_POINTS))


def append(path, steps, losses, accuracies, times) -> None:
    """Add points to the file at `path`. A run that starts again from a snapshot trains
    the steps after it once more: points from there on are dropped before the new ones
    go in, so every step appears once."""
    records = np.empty(len(steps), RECORD)
    records["step"], records["loss"], records["accuracy"], records["time"] = steps, losses, accuracies, times
    if not len(records):
        return
    existing = read(path)
    if len(existing) and existing["step"][-1] >= records["step"][0]:
        keep = int(np.searchsorted(existing["step"], records["step"][0]))
        with open(path, "r+b") as f:
            f.truncate(keep * RECORD.itemsize)
    with open(path, "ab") as f:
        f.write(records.tobytes())


def read(path) -> np.ndarray:
    """Every point in the file, oldest first (memory-mapped); none when there is no file.
    A record cut short by a writer that died mid-write is left out."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return np.empty(0, RECORD)
    count = size // RECORD.itemsize
    if count == 0:
        return np.empty(0, RECORD)
    return np.memmap(path, dtype=RECORD, mode="r", shape=(count,))


def downsample(values: np.ndarray, max_points: int = CHART_POINTS) -> np.ndarray:
    """Indices into `values` (sorted) of at most `max_points` points that draw the same
    curve: the series is cut into max_points // 2 buckets of consecutive points and each
    keeps its lowest and its highest. So every spike and every dip survives, which an
    average or every n-th point would smooth away. NaNs never win a bucket."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    padded = np.full(buckets * size, np.nan)
    padded[:n] = values
    rows = padded.reshape(buckets, size)
    real = ~np.isnan(rows)
    starts = np.arange(buckets) * size
    low = np.where(real, rows, np.inf).argmin(axis=1) + starts
    high = np.where(real, rows, -np.inf).argmax(axis=1) + starts
    picked = np.unique(np.concatenate([low, high]))
    return picked[picked < n]


def learning_rate_points(config, steps_per_epoch: int, max_points: int = CHART_POINTS) -> list[tuple[float, float]]:
    """(step, learning rate) where the rate changes, for a stepped line: exact for the
    policies that jump (a drop at 1.65 epochs is drawn at 1.65), cut down like the other
    series for the ones that glide. ``config`` as for ``schedules.learning_rate_curve``."""
    from training import schedules

    accumulation = getattr(config, "batch_accumulation", 1)
    updates = schedules.total_updates(steps_per_epoch, config.epochs, accumulation)
    schedule = config.lr_policy.schedule(config.learning_rate, updates)
    rates = np.broadcast_to(np.asarray(schedule(np.arange(updates)), dtype=np.float64), (updates,))
    changes = np.flatnonzero(np.diff(rates)) + 1
    starts = np.concatenate([[0], changes])
    if len(starts) > max_points:
        starts = starts[downsample(rates[starts], max_points)]
    # Update u runs during batches u * accumulation + 1 onwards: the rate takes over from there.
    points = [(float(u * accumulation), float(rates[u])) for u in starts]
    last = float(steps_per_epoch * config.epochs)
    return [*points, (last, float(rates[-1]))]


def chart_series(records: np.ndarray, started: float, start_step=None, end_step=None, max_points=CHART_POINTS) -> dict:
    """The points a chart draws, between two steps when given: step, seconds since
    `started` and the value, each series cut down on its own so each keeps its extremes."""
    if start_step is not None or end_step is not None:
        steps = records["step"]
        lo = 0 if start_step is None else int(np.searchsorted(steps, start_step, side="left"))
        hi = len(records) if end_step is None else int(np.searchsorted(steps, end_step, side="right"))
        # One point beyond each end, so the line runs to the edge of a zoomed chart.
        records = records[max(0, lo - 1) : hi + 1]
    out = {"count": len(records)}
    for name in ("loss", "accuracy"):
        values = np.asarray(records[name], dtype=np.float64)
        picked = downsample(values, max_points)
        out[name] = {
            "step": records["step"][picked].tolist(),
            "time": np.round(records["time"][picked] - started, 2).tolist(),
            "value": [float(f"{v:.6g}") for v in values[picked]],
        }
    return out
