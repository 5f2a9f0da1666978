"""`datamesh up` on a fresh data directory: from the command to its "DataMesh is up" line."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from bench.harness import DataMeshUp, Spread, say
from bench.report import Section, Table, Target

READY_LIMIT_SECONDS = 15


def run(root: Path, *, reps: int) -> Section:
    section = Section(
        "startup",
        "`datamesh up` on a fresh data directory",
        "`datamesh up --data-dir <new empty directory> --as-of 2024-10-18` (two embedded "
        "PostgreSQL clusters created, migrated, the sample loaded, three services started and "
        "ready), timed from starting the command to its `DataMesh is up` line; the directory "
        f"is on the same file system as the bench data; {reps} repetitions, median (min-max).",
    )
    measured, reported = [], []
    for rep in range(reps):
        say(f"startup: repetition {rep + 1} of {reps}")
        fresh = Path(tempfile.mkdtemp(prefix="fresh-", dir=root))
        mesh = DataMeshUp(fresh, load_settings=False)
        try:
            with mesh.start():
                measured.append(mesh.ready_seconds)
                reported.append(mesh.reported_seconds)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
            mesh.log.unlink(missing_ok=True)
    ready = Spread.of(measured)
    table = Table(["", "seconds"])
    table.rows.append(["command started → `DataMesh is up` line", ready.text(" s", 2)])
    table.rows.append(
        ["what `datamesh up` reports (`is up in ...`)", Spread.of(reported).text(" s", 2)]
    )
    section.tables.append(table)
    section.targets.append(
        Target(
            "`datamesh up`, fresh data directory, sample data",
            ready.text(" s", 2),
            f"ready in < {READY_LIMIT_SECONDS} s",
            ready.median < READY_LIMIT_SECONDS,
        )
    )
    return section
