"""deploy/alerts/belabox.rules.yml: `promtool check rules` is clean, `promtool test rules`
passes (every alert fires when it should, stays silent on healthy series and on a single bad
sample: deploy/alerts/tests/), and every rule keeps the conventions docs/alerts.md promises."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.helpers import REPO_ROOT, require_tool

ALERTS = REPO_ROOT / "deploy" / "alerts"
RULES = ALERTS / "belabox.rules.yml"
TESTS = ALERTS / "tests" / "belabox.rules.test.yml"
DOC = REPO_ROOT / "docs" / "alerts.md"


def groups() -> list[dict[str, object]]:
    return list(yaml.safe_load(RULES.read_text())["groups"])


def alert_rules() -> list[dict[str, object]]:
    return [rule for group in groups() for rule in group["rules"] if "alert" in rule]  # type: ignore[attr-defined]


def test_promtool_check_rules_is_clean() -> None:
    promtool = require_tool("promtool", "prometheus")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "WARNING" not in done.stdout + done.stderr


def test_promtool_unit_tests_pass() -> None:
    promtool = require_tool("promtool", "prometheus")
    done = subprocess.run([promtool, "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_unit_tested_both_ways() -> None:
    """Each alert appears in the promtool tests once firing and once expected silent."""
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names - fired == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


def test_every_alert_names_the_device_and_links_its_runbook() -> None:
    doc = DOC.read_text()
    anchors = {"#" + re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
               for line in doc.splitlines() if line.startswith("## ") or line.startswith("### ")}
    for rule in alert_rules():
        labels, notes = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and isinstance(notes, dict)
        assert labels.get("severity") in {"critical", "warning", "info"}, rule["alert"]
        assert "{{ $labels.device_id }}" in notes["summary"], rule["alert"]
        if rule["alert"] != "BelaboxDeviceSilent":  # a silent box has no value to show
            assert "$value" in notes["description"], rule["alert"]
        url = str(notes["runbook_url"])
        assert url == f"docs/alerts.md#{str(rule['alert']).lower()}", rule["alert"]
        assert url.removeprefix("docs/alerts.md") in anchors, f"{url}: no such heading in docs/alerts.md"


def test_thresholds_are_in_one_group_and_documented() -> None:
    """Every belabox:threshold:* an alert uses is defined once, in the thresholds group, and
    listed with its default in docs/alerts.md."""
    threshold_group = next(g for g in groups() if g["name"] == "belabox-thresholds")
    defined = {str(rule["record"]): str(rule["expr"]) for rule in threshold_group["rules"]}  # type: ignore[attr-defined]
    used = {name for rule in alert_rules() for name in re.findall(r"belabox:threshold:\w+", str(rule["expr"]))}
    assert used <= set(defined), used - set(defined)
    assert set(defined) <= used, f"thresholds no rule uses: {set(defined) - used}"
    doc = DOC.read_text()
    for name, expr in defined.items():
        value = re.fullmatch(r"vector\(([\d.]+)\)", expr)
        assert value, f"{name}: a constant vector(N)"
        assert re.search(rf"`{re.escape(name.removeprefix('belabox:threshold:'))}`\s*\|\s*{re.escape(value.group(1))}\b",
                         doc), f"{name} = {value.group(1)} is not in docs/alerts.md's threshold table"
