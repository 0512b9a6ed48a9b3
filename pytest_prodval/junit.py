"""Criterion values in JUnit XML, valid against the strict junit-10.xsd.

That schema allows no <properties> inside a <testcase>, but allows <system-out>: every
criterion's values go there as `key=value` lines. `--prodval-junit-properties` adds
testcase properties too, for consumers that accept them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest


class JunitSystemOut:
    """Appends the `prodval` report section to the testcase's JUnit node."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Before junitxml closes the testcase (teardown), add our <system-out>."""
        if report.when not in ("setup", "call"):
            return
        text = next((content for name, content in report.sections if name == "prodval"), None)
        if text is None:
            return
        # Private pytest API, kept here alone: `_pytest.junitxml.xml_key` and `LogXML.node_reporter`
        # (checked on pytest 9.2.0). pytest writes <system-out> only from captured output, and only
        # with junit_logging set; there is no public way to add an element to a testcase.
        from _pytest.junitxml import xml_key

        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        node = ET.Element("system-out")
        node.text = text
        xml.node_reporter(report).append(node)
