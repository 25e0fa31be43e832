"""Tags and Azure names shared by every component."""

from __future__ import annotations

from collections.abc import Mapping

from components.shutdown import EXPIRES_TAG

# The four tags every taggable resource carries (a test checks them on the whole graph).
TAG_KEYS: tuple[str, ...] = ("project", "stack", "scenario", "component")


def base_tags(project: str, stack: str, scenario: str, *,
              expires_on: str | None = None) -> dict[str, str]:
    """The tags a stack hands to a component; the component adds its own ``component``.

    ``expires_on`` (the cost guardrail's ``expires-on`` tag) is added when given.
    """
    tags = {"project": project, "stack": stack, "scenario": scenario}
    if expires_on is not None:
        tags[EXPIRES_TAG] = expires_on
    return tags


def component_tags(tags: Mapping[str, str], component: str) -> dict[str, str]:
    """``tags`` plus ``component``; the caller's ``component`` (if any) is replaced."""
    return {**tags, "component": component}
