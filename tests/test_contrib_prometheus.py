"""contrib/prometheus: the alert rules and their unit tests through Debian's `promtool`,
and the Grafana dashboard's queries parsed by it and naming only metrics gateagent has."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateagent.metrics import Exporter
from gateagent.store import Store
from tests import debian
from tests.settings import make_settings
from tests.uplink.uploading import record

CONTRIB = Path(__file__).parents[1] / "contrib" / "prometheus"
RULES = CONTRIB / "gateagent.rules.yml"
RULE_TESTS = CONTRIB / "gateagent.rules.test.yml"
DASHBOARD = CONTRIB / "gateagent-dashboard.json"
# What node_exporter and Prometheus themselves say of a gate.
OTHERS = {"node_textfile_mtime_seconds", "up"}


def promtool(*args: str, cwd: Path = CONTRIB) -> None:
    program = debian.program("promtool", "prometheus")
    done = subprocess.run(
        [program, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def names_in(exprs: str) -> set[str]:
    """The metric names in PromQL expressions."""
    return set(re.findall(r"\b(gateagent_[a-z_]+|node_[a-z_]+|up)\b", exprs))


def exported(tmp_path: Path) -> set[str]:
    """Every metric name gateagent writes, on a gate with all of them present."""
    settings = make_settings(tmp_path, "http://127.0.0.1:9/api")
    store = Store.open(settings.storage.path)
    try:
        store.set_meta("clock_synchronized", "1")
        store.set_reader("desk", True, None)
        record(store, settings, "0012822001")  # the reader's last tap
        text = Exporter(settings, unsaved=lambda: 0).text().decode()
    finally:
        store.close()
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_the_rules_are_valid() -> None:
    promtool("check", "rules", str(RULES))


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    alerts = re.findall(r"^\s+- alert: (\w+)$", RULES.read_text(), re.M)
    assert len(alerts) == 8
    cases = re.findall(r"alertname: (\w+)\n\s+exp_alerts:( \[\])?", RULE_TESTS.read_text())
    assert {name for name, quiet in cases if quiet} == set(alerts), "a quiet case each"
    assert {name for name, quiet in cases if not quiet} == set(alerts), "a firing case each"
    promtool("test", "rules", RULE_TESTS.name)


def test_every_alert_explains_itself() -> None:
    text = RULES.read_text()
    rules = text.split("- alert: ")[1:]
    for rule in rules:
        assert "summary: " in rule and "description: " in rule, rule
        assert "severity: " in rule, rule


def test_the_dashboard_queries_parse_and_name_gateagent_metrics(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert len(exprs) >= 10
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("pending", "deliveries", "readers", "clock", "last tap"):
        assert topic in titles, topic
    # Grafana's variables as a query would have them, then each query as a recording
    # rule: `promtool check rules` parses PromQL (and YAML reads JSON).
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query{n}",
                        "expr": expr.replace("$device", ".*").replace("$__rate_interval", "5m"),
                    }
                    for n, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.json"
    path.write_text(json.dumps(rules))
    promtool("check", "rules", str(path), cwd=tmp_path)

    ours = exported(tmp_path) | OTHERS
    rule_exprs = re.findall(r"expr: \|\n((?:\s{10}.*\n)+)", RULES.read_text())
    assert len(rule_exprs) == 8
    named = names_in("\n".join(exprs + rule_exprs))
    # A counter's samples end in _total.
    assert named <= ours, named - ours
