"""Tags and Azure names shared by every component."""

from __future__ import annotations

from collections.abc import Mapping

# The four tags every taggable resource carries (a test checks them on the whole graph).
TAG_KEYS: tuple[str, ...] = ("project", "stack", "scenario", "component")


def base_tags(project: str, stack: str, scenario: str) -> dict[str, str]:
    """The tags a stack hands to a component; the component adds its own ``component``."""
    return {"project": project, "stack": stack, "scenario": scenario}


def component_tags(tags: Mapping[str, str], component: str) -> dict[str, str]:
    """``tags`` plus ``component``; the caller's ``component`` (if any) is replaced."""
    return {**tags, "component": component}
