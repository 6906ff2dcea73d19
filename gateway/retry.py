"""When to try again after a failure: exponential backoff with equal jitter, capped."""
from __future__ import annotations

import random

from gateway.config import PipelineSettings


def backoff_delay(attempts: int, settings: PipelineSettings) -> float:
    """Exponential backoff with equal jitter, capped, so a portal outage is not hammered in lock-step."""
    ceiling = min(settings.backoff_max_seconds, settings.backoff_base_seconds * 2 ** max(attempts - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)
