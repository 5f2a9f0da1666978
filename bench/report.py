"""The results as Markdown: the machine, the targets met or missed, a table per section."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.harness import PeakRss


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    title: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""] if self.title else []
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    passed: bool | None  # None: not measured


@dataclass
class Section:
    key: str
    title: str
    method: str
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rss: PeakRss = field(default_factory=PeakRss)
    rss_title: str = (
        "Peak RSS of each service during each test (MiB, the largest over the repetitions)"
    )

    def rss_table(self) -> Table | None:
        if not self.rss.tests:
            return None
        names = sorted({n for peaks in self.rss.tests.values() for n in peaks}, key=_order)
        table = Table(["test", *names], title=self.rss_title)
        for test, peaks in self.rss.tests.items():
            table.rows.append([test, *(f"{peaks[n]:.0f}" if n in peaks else "" for n in names)])
        return table


def _order(name: str) -> tuple[int, str]:
    known = ("ours", "sales", "marketing", "mesh", "b0", "B0")
    return (known.index(name) if name in known else len(known), name)


def verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**miss**", None: "not measured"}[passed]


def render(machine: list[tuple[str, str]], sections: list[Section], options: str) -> str:
    out = ["# DataMesh benchmark results", ""]
    out.append(
        "Written by `make bench` (`python -m bench`); the method is in "
        "[docs/performance.md](../docs/performance.md)."
    )
    out += ["", f"Run: `{options}`", "", "| machine | |", "|---|---|"]
    out += [f"| {key} | {value} |" for key, value in machine]
    targets = [t for s in sections for t in s.targets]
    if targets:
        out += ["", "## Targets", "", "| target | measured | goal | |", "|---|---|---|---|"]
        out += [f"| {t.name} | {t.measured} | {t.goal} | {verdict(t.passed)} |" for t in targets]
    for section in sections:
        out += ["", f"## {section.title}", "", section.method]
        for table in section.tables:
            out += ["", table.markdown()]
        rss = section.rss_table()
        if rss is not None:
            out += ["", rss.markdown()]
        if section.notes:
            out += [""] + [f"- {note}" for note in section.notes]
    return "\n".join(out) + "\n"
