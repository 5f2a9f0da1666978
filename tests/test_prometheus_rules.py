"""deploy/prometheus/rules.yml: promtool checks the rules and runs their unit tests
(deploy/prometheus/rules.test.yml); every alert is routed by severity, described, points at its
section of docs/observability.md, fires in a unit test and stays silent in another, and no rule
names a domain."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services import DOMAINS
from tests.test_layout import mentions

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/rules.yml"
RULE_TESTS = ROOT / "deploy/prometheus/rules.test.yml"
DOCS = ROOT / "docs/observability.md"


def debian_tool(name: str) -> str:
    """The path of a program of Debian's prometheus package: in CI (CI=true) it must be there
    (.ci/run installs it); elsewhere the test is skipped without it."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is not installed: .ci/run installs Debian's prometheus package")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


def promtool(*args: str) -> None:
    done = subprocess.run(
        [debian_tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown text."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    }


def test_promtool_accepts_the_rules() -> None:
    promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_the_rules_pass_their_unit_tests() -> None:
    promtool("test", "rules", str(RULE_TESTS.relative_to(ROOT)))


def test_every_alert_is_routed_described_and_has_its_runbook() -> None:
    found = alerts()
    assert len(found) >= 10
    sections = anchors(DOCS.read_text())
    for alert in found:
        name = alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), name
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert "{{ $labels." in notes["summary"] + notes["description"], name
        assert notes["runbook_url"] == f"docs/observability.md#{name.lower()}", name
        assert name.lower() in sections, f"docs/observability.md has no section {name}"


def test_every_alert_fires_in_a_unit_test_and_stays_silent_in_another() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert {alert["alert"]: {True, False} for alert in alerts()} == cases


def test_no_rule_names_a_domain() -> None:
    for path in (RULES, RULE_TESTS):
        assert mentions(path.read_text(), DOMAINS) == [], path
