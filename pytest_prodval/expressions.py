"""k6-style threshold expressions: `p(95)<500`, `rate<0.01`, `count==0`, `peak>=100`."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}

# Aggregations k6 computes (trend stats, rate, counter, gauge) plus `peak`/`mean`/`share`,
# which the plugin computes itself from raw output (concurrency).
_AGGREGATION = r"(?P<agg>p\(\d+(?:\.\d+)?\)|avg|min|med|max|count|rate|value|peak|mean|share)"
_EXPRESSION = re.compile(
    rf"^\s*{_AGGREGATION}\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<num>-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$"
)
_METRIC_REF = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\{(?P<tags>[^{}]*)\})?$")


class ExpressionError(ValueError):
    """An expression or metric reference that cannot be understood."""


@dataclass(frozen=True)
class Expression:
    """A parsed threshold expression."""

    aggregation: str
    operator: str
    threshold: float

    def holds(self, observed: float) -> bool:
        """Whether the observed value satisfies the expression."""
        return _OPERATORS[self.operator](observed, self.threshold)

    @property
    def percentile(self) -> float | None:
        """The percentile of a `p(N)` aggregation, else None."""
        if self.aggregation.startswith("p("):
            return float(self.aggregation[2:-1])
        return None

    def __str__(self) -> str:
        return f"{self.aggregation}{self.operator}{self.threshold:g}"


def parse_expression(text: str) -> Expression:
    """Parse `p(95)<500` into an Expression; ExpressionError says what is expected."""
    match = _EXPRESSION.match(text)
    if not match:
        raise ExpressionError(
            f"{text!r} is not a threshold expression; expected AGGREGATION OPERATOR NUMBER such as "
            "'p(95)<500', 'rate<0.01', 'count==0' or 'peak>=100'"
        )
    return Expression(match["agg"], match["op"], float(match["num"]))


@dataclass(frozen=True)
class MetricRef:
    """A k6 metric with optional tag filter, as in `http_req_duration{name:login,phase:steady}`."""

    name: str
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def k6_name(self) -> str:
        """The name k6 uses for the (sub)metric in its summary."""
        if not self.tags:
            return self.name
        return self.name + "{" + ",".join(f"{k}:{v}" for k, v in self.tags) + "}"

    def __str__(self) -> str:
        return self.k6_name


def parse_metric(text: str) -> MetricRef:
    """Parse `name{tag:value,...}`; tag order is kept as written, since k6 names submetrics that way."""
    match = _METRIC_REF.match(text.strip())
    if not match:
        raise ExpressionError(f"{text!r} is not a metric reference; expected NAME or NAME{{tag:value,...}}")
    tags: list[tuple[str, str]] = []
    if match["tags"]:
        for part in match["tags"].split(","):
            key, sep, value = part.partition(":")
            if not sep or not key.strip() or not value.strip():
                raise ExpressionError(f"{text!r}: tag filter {part!r} must be 'key:value'")
            tags.append((key.strip(), value.strip()))
    return MetricRef(match["name"], tuple(tags))
