"""--format sarif (SARIF 2.1.0 required structure), github (workflow annotations) and json."""
from __future__ import annotations

import json

from gradlint.rules import ALL_RULES

from conftest import FIXTURES, run_gradlint

EXAMPLE = FIXTURES / "example" / "train_partial_update.py"


def test_sarif_has_the_required_structure(write) -> None:
    broken = write("broken.py", "import tensorflow as tf\ndef f(:\n  tf.gradients(a, b)\n")
    result = run_gradlint("check", "--format", "sarif", str(EXAMPLE), str(broken))
    assert result.returncode == 2  # the syntax error
    document = json.loads(result.stdout)
    assert document["version"] == "2.1.0"
    assert document["$schema"].endswith("sarif-2.1.0.json")
    (run,) = document["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "gradlint" and driver["version"]
    rule_ids = [rule["id"] for rule in driver["rules"]]
    assert rule_ids == [rule.CODE for rule in ALL_RULES]
    for rule in driver["rules"]:
        assert rule["shortDescription"]["text"] and rule["fullDescription"]["text"]
        assert "## Why is this bad?" in rule["help"]["markdown"]
    assert {r["ruleId"] for r in run["results"]} == {"GRD001", "GRD002", "GRD003", "GRD012"}
    for item in run["results"]:
        assert item["message"]["text"]
        assert driver["rules"][item["ruleIndex"]]["id"] == item["ruleId"]
        assert item["level"] in ("none", "note", "warning", "error")
        (location,) = item["locations"]
        region = location["physicalLocation"]["region"]
        assert location["physicalLocation"]["artifactLocation"]["uri"].endswith("train_partial_update.py")
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        assert (region["endLine"], region["endColumn"]) >= (region["startLine"], region["startColumn"])
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    assert "syntax error" in invocation["toolExecutionNotifications"][0]["message"]["text"]


def test_github_annotations(write) -> None:
    result = run_gradlint("check", "--format", "github", str(EXAMPLE))
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert line.startswith("::warning file=") and ",line=" in line and ",col=" in line
        assert "::GRD0" in line and "\n" not in line
    broken = write("bad.py", "import tensorflow as tf\ngrads = tf.gradients(a, b\n")
    error = run_gradlint("check", "--format", "github", str(broken))
    assert error.stdout.startswith("::error file=") and "syntax error" in error.stdout


def test_json_is_stable_and_sorted() -> None:
    first = run_gradlint("check", "--format", "json", str(FIXTURES / "rules"))
    second = run_gradlint("check", "--format", "json", str(FIXTURES / "rules"))
    assert first.stdout == second.stdout
    findings = json.loads(first.stdout)["findings"]
    keys = [(f["path"], f["line"], f["column"]) for f in findings]
    assert keys == sorted(keys)
    assert set(findings[0]) == {"path", "line", "column", "end_line", "end_column", "code", "name", "message", "cell"}
    assert all(f["cell"] is None for f in findings)  # no notebooks there


def test_github_file_errors_carry_a_line(write) -> None:
    broken = write("bad.py", "import tensorflow as tf\n\ngrads = tf.gradients(a, b\n")
    latin = write("latin.py", b"# optimizer\nx = 1\nname = '\xe9'\n")
    result = run_gradlint("check", "--format", "github", str(broken), str(latin))
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"::error file={broken},line=3,title=gradlint::syntax error at line 3")
    assert lines[1].startswith(f"::error file={latin},line=3,title=gradlint::cannot decode the file as utf-8 (line 3)")
    document = json.loads(run_gradlint("check", "--format", "json", str(broken)).stdout)
    assert document["errors"][0]["line"] == 3 and document["errors"][0]["cell"] is None
    sarif = json.loads(run_gradlint("check", "--format", "sarif", str(broken)).stdout)
    notification = sarif["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]
    assert notification["locations"][0]["physicalLocation"]["region"] == {"startLine": 3}


def test_rules_listing_columns_are_aligned() -> None:
    lines = run_gradlint("rules").stdout.splitlines()
    assert len(lines) >= 27

    def summary_start(line: str) -> int:
        after_tags = line.index("]") + 1
        return after_tags + len(line[after_tags:]) - len(line[after_tags:].lstrip())

    assert len({line.index("[") for line in lines}) == 1
    assert len({summary_start(line) for line in lines}) == 1
