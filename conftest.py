"""Repository-wide pytest configuration.

Registers the Hypothesis profiles, here at the root so that
``pytest --hypothesis-profile=ci`` works whichever directory is collected
first; Hypothesis's pytest plugin loads the chosen profile.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow],
)
