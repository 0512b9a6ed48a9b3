"""A criterion's values in the test reports people already use: pytest-html extras, Allure attachments.

Neither plugin is a dependency: each is imported when a report is made and skipped when it is
not installed. pytest-html shows `report.extras` (an HTML table and the values as JSON) in
the row of the test; allure-pytest attaches `allure.attach` data to the running test, so the
values are attached in `pytest_runtest_makereport`, while the test is still open.
"""

from __future__ import annotations

import html
import importlib
import json
from collections.abc import Generator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from .criteria import format_value
from .items import CriterionItem

if TYPE_CHECKING:
    from .secrets import Redactor

FIELDS = ("observed", "threshold", "unit", "profile", "samples", "verdict", "hint")


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def criterion_values(item: CriterionItem, report: pytest.TestReport) -> dict[str, Any]:
    """The values a reader of the test report needs: observed, threshold, unit, profile, samples, verdict, hint."""
    result, criterion = item.result, item.criterion
    if result is None:  # not judged (preflight failed, k6 broke): what the criterion asks, and why not
        return {"scenario": item.scenario.id, "criterion": item.name, "observed": None,
                "threshold": criterion.expression_text, "unit": criterion.unit, "profile": criterion.profile,
                "samples": 0, "verdict": "n/a" if report.skipped else "error", "hint": criterion.hint}
    return {"scenario": item.scenario.id, "criterion": result.name, "observed": result.observed,
            "observed_display": format_value(result.observed, result.unit), "threshold": result.expression,
            "unit": result.unit, "profile": result.profile, "samples": result.samples, "verdict": result.verdict,
            "hint": result.hint, "message": result.message}


def values_table(values: dict[str, Any]) -> str:
    """The values as a small HTML table (pytest-html shows it under the test's row)."""
    shown = {**values, "observed": values.get("observed_display", values["observed"])}
    rows = "".join(f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(shown[key]))}</td></tr>"
                   for key in FIELDS if shown.get(key) is not None)
    return f'<table class="prodval-values">{rows}</table>'


class CriterionExtras:
    """Registered while pytest-prodval is active; a no-op for reporters that are not installed."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        """On the report that carries the verdict (call, or a setup that errored or skipped)."""
        report = yield
        if not isinstance(item, CriterionItem) or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return report
        values = json.loads(self.redactor.redact(json.dumps(criterion_values(item, report))))
        pytest_html = _optional("pytest_html")
        if pytest_html is not None:
            extras = [*getattr(report, "extras", []), pytest_html.extras.html(values_table(values)),
                      pytest_html.extras.json(values, name="prodval values")]
            setattr(report, "extras", extras)  # pytest-html's attribute, unknown to pytest's own types
        allure = _optional("allure")
        if allure is not None:
            allure.attach(json.dumps(values, indent=2), name=f"prodval {item.name}",
                          attachment_type=allure.attachment_type.JSON)
        return report

