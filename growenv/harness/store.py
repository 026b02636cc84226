"""The bench's results store: finished episodes appended as each job finishes.

A bench run with an output directory keeps every finished episode in ``episodes.jsonl``
there: one JSON line per finished job (a single episode, or a lockstep group of seeds), each
line holding the result rows of its episodes, written with one ``write`` and flushed to disk
before the next job is started. An episode is identified by its key ``(task, policy spec,
seed)``. Reading keeps the first record of a key (a job run twice, e.g. retried on another
node, counts once) and ignores a last line cut short by a kill. ``bench.json`` records the
env settings the episodes were run with; a resumed run must use the same ones.

The final files (``results.csv``, ``summary.json``, plots) are derived from the store by
:func:`~growenv.harness.summary.write_results` and :func:`~growenv.harness.plots.plot_results`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from growenv.errors import UserError
from growenv.harness.lifecycle import atomic_write_text

__all__ = [
    "META_FILE",
    "RESULT_FILES",
    "STORE_FILE",
    "BenchStore",
    "EpisodeKey",
    "clear_bench_dir",
]

STORE_FILE = "episodes.jsonl"
"""Finished episodes, one JSON line per finished job."""
META_FILE = "bench.json"
"""The settings the stored episodes were run with (``{"env_kwargs": ...}``)."""
RESULT_FILES = ("results.csv", "summary.json")
"""Files derived from the store at the end of a run."""

EpisodeKey = tuple[str, str, int]
"""``(task, policy spec, seed)``: one episode of a bench."""


def _key(row: Mapping[str, Any]) -> EpisodeKey:
    return (str(row["task"]), str(row["policy"]), int(row["seed"]))


def _jsonable(value: Any) -> Any:
    """numpy scalars as Python numbers (``json.dumps``'s ``default``)."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {value!r}")


def _normalised(env_kwargs: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(env_kwargs), sort_keys=True, default=repr))


def _previous_tasks(path: Path) -> set[str]:
    """Tasks of the results in ``path`` (store and ``results.csv``): their plots' names."""
    tasks: set[str] = set()
    store = path / STORE_FILE
    if store.is_file():
        tasks |= {key[0] for key in BenchStore(path).load()}
    csv_path = path / "results.csv"
    if csv_path.is_file():
        with csv_path.open(newline="") as f:
            tasks |= {row["task"] for row in csv.DictReader(f) if row.get("task")}
    return tasks


def clear_bench_dir(out: str | Path) -> list[Path]:
    """Remove a previous bench's files from ``out``; return the removed paths.

    The store, its settings, ``results.csv``, ``summary.json`` and the plots of the tasks
    those results name (``<task>.png``); other files are left alone.
    """
    path = Path(out)
    if not path.is_dir():
        return []
    names = [STORE_FILE, META_FILE, *RESULT_FILES]
    names += [f"{task}.png" for task in sorted(_previous_tasks(path))]
    removed = []
    for name in names:
        target = path / name
        if target.is_file():
            target.unlink()
            removed.append(target)
    return removed


class BenchStore:
    """The append-only store of finished episodes in a bench's output directory.

    Parameters
    ----------
    out
        The output directory (``episodes.jsonl`` and ``bench.json`` in it).

    Use :meth:`open` to start or resume a run in ``out``; a store built directly only reads.
    """

    def __init__(self, out: str | Path) -> None:
        self.dir = Path(out)
        self.path = self.dir / STORE_FILE

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        out: str | Path,
        env_kwargs: Mapping[str, Any],
        resume: bool = False,
        force: bool = False,
    ) -> BenchStore:
        """Prepare ``out`` for a run and return its store.

        Parameters
        ----------
        out
            The output directory (created if missing).
        env_kwargs
            The env settings of the run (recorded in ``bench.json``; a resumed run must
            have the same).
        resume
            Keep the episodes already in ``out`` (a run then skips them). A missing or
            empty ``out`` starts a new run.
        force
            Remove a previous bench's files first (:func:`clear_bench_dir`).

        Raises
        ------
        FileExistsError
            ``out`` is a file, or a non-empty directory without ``resume`` or ``force``.
        ValueError
            ``resume`` and ``force`` both, or (a :class:`~growenv.errors.UserError`: the
            CLI prints it as one line) ``resume`` with other env settings than the stored
            episodes'.
        """
        if resume and force:
            raise ValueError("resume: give resume (keep finished episodes) or force, not both")
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"--out {path}: exists and is not a directory")
        if force:
            clear_bench_dir(path)
        elif path.is_dir() and any(path.iterdir()) and not resume:
            raise FileExistsError(
                f"--out {path}: directory exists and is not empty; choose another directory, "
                "pass --resume to finish its run or --force to replace its results"
            )
        path.mkdir(parents=True, exist_ok=True)
        store = cls(path)
        meta = path / META_FILE
        settings = _normalised(env_kwargs)
        if meta.is_file():
            stored = json.loads(meta.read_text()).get("env_kwargs") or {}
            if stored != settings:
                keys = sorted(k for k in {*stored, *settings} if stored.get(k) != settings.get(k))
                diff = ", ".join(
                    f"{k}: {stored.get(k)!r} there, {settings.get(k)!r} now" for k in keys
                )
                raise UserError(
                    f"resume: {path} holds episodes run with other env_kwargs ({diff}); "
                    "use the same settings, another --out, or --force to replace them"
                )
        elif store.path.is_file() and store.path.stat().st_size:
            raise UserError(f"resume: {path} holds episodes but no {META_FILE}")
        else:
            atomic_write_text(meta, json.dumps({"env_kwargs": settings}, indent=2) + "\n")
        store._repair()
        return store

    def _repair(self) -> None:
        """Cut a last line left incomplete by a kill (appending after it would spoil the
        next record)."""
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)

    # ------------------------------------------------------------------ writing

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record the rows of one finished job (one or more whole episodes) durably: one
        line, one write, flushed and synced before returning."""
        if not rows:
            return
        line = json.dumps({"rows": [dict(r) for r in rows]}, default=_jsonable) + "\n"
        with self.path.open("a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[EpisodeKey, list[dict[str, Any]]]:
        """The stored episodes: ``{(task, policy, seed): rows}``, the first record of each
        key (later duplicates and an incomplete last line are ignored)."""
        episodes: dict[EpisodeKey, list[dict[str, Any]]] = {}
        if not self.path.is_file():
            return episodes
        with self.path.open() as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # cut short by a kill
                record: dict[EpisodeKey, list[dict[str, Any]]] = {}
                for row in json.loads(line)["rows"]:
                    record.setdefault(_key(row), []).append(row)
                for key, rows in record.items():
                    episodes.setdefault(key, rows)
        return episodes

    def done(self) -> set[EpisodeKey]:
        """Keys of the finished episodes."""
        return set(self.load())

    def rows(self, keys: Iterable[EpisodeKey]) -> list[dict[str, Any]]:
        """The rows of ``keys``, in that order (each episode's rows by step).

        Raises
        ------
        KeyError
            For a key that is not stored.
        """
        episodes = self.load()
        out: list[dict[str, Any]] = []
        for key in keys:
            if key not in episodes:
                raise KeyError(f"episode {key} is not in {self.path}")
            out += sorted(episodes[key], key=lambda r: int(r["step"]))
        return out
