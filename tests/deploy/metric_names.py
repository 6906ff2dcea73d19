"""Which metric names gateway/metrics.py exports, and which ones a PromQL expression uses."""
from __future__ import annotations

import re

from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import PREFIX, Metrics

# Labels Prometheus adds or the exposition format implies, valid on every gateway series.
IMPLIED_LABELS = frozenset({"job", "instance", "le", "quantile"})
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "unknown": ("",),
}
# The gateway's own metrics, and the process and Python runtime metrics its registry exports too.
_NAME = re.compile(rf"\b(?:{PREFIX}|process|python)_[a-zA-Z0-9_]+")
_SELECTOR = re.compile(rf"\b({PREFIX}_[a-zA-Z0-9_]+)\s*\{{([^}}]*)\}}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name the gateway can expose (with its suffixes), mapped to its label names."""
    metrics = Metrics()
    families = text_string_to_metric_families(metrics.render().decode())
    label_names = {
        wrapper._name: frozenset(wrapper._labelnames)  # declared labels: not in the exposition until used
        for wrapper in vars(metrics).values() if isinstance(wrapper, MetricWrapperBase)
    }
    series: dict[str, frozenset[str]] = {}
    for family in families:
        base = family.name.removesuffix("_info") if family.type == "info" else family.name
        labels = label_names.get(base, frozenset()) | {
            label for sample in family.samples for label in sample.labels
        }
        for suffix in _SUFFIXES[family.type]:
            series[family.name + suffix] = frozenset(labels)
    return series


def names_used(promql: str) -> set[str]:
    """Every gateway, process or Python runtime metric name that appears in a PromQL expression."""
    return set(_NAME.findall(promql))


def unknown_names(promql: str, exported: dict[str, frozenset[str]]) -> set[str]:
    """Gateway metric names in the expression that the gateway does not export."""
    return names_used(promql) - exported.keys()


def unknown_labels(promql: str, exported: dict[str, frozenset[str]]) -> set[str]:
    """Label names the expression matches or groups on that none of its metrics carries."""
    used = names_used(promql) & exported.keys()
    known = set(IMPLIED_LABELS).union(*(exported[name] for name in used))
    wrong = set()
    for name, matchers in _SELECTOR.findall(promql):
        if name in exported:
            wrong |= {f"{name}{{{label}}}" for label in _MATCHER_LABEL.findall(matchers)
                      if label not in exported[name] | IMPLIED_LABELS}
    for grouping in _GROUPING.findall(promql):
        wrong |= {label for label in re.split(r"[\s,]+", grouping.strip()) if label and label not in known}
    return wrong
