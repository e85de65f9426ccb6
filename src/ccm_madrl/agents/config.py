"""The agent's config as the training side sees it: the models of :mod:`ccm_madrl.config.agent`
(imported from there; the config layer imports no training code) and the reference of its options
with their allowed values, which needs the registries (``docs/config.md``)."""

from __future__ import annotations

from ..config.agent import *  # noqa: F403 - the models, re-exported
from ..config.agent import FLAT_KEYS, SECTIONS, learners, part_registry
from . import LEARNERS  # noqa: F401 - importing the package hands the registries to the config


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|").replace("``", "`")


def reference_markdown() -> str:
    """The agent options (one table per sub-config: key, default, allowed values, meaning) and the
    table of old flat keys, as docs/config.md holds them (scripts/render_config_docs.py writes them,
    tests/test_config_migration.py checks them)."""
    out = []
    for section, model in SECTIONS.items():
        prefix = f"agent.{section}." if section else "agent."
        doc = _cell(model.__doc__ or "") if section else "The learner and its optimisation."
        out += [
            f"### `{prefix[:-1]}`",
            "",
            doc,
            "",
            "| key | default | allowed | meaning |",
            "|---|---|---|---|",
        ]
        for name, field in model.model_fields.items():
            if name in SECTIONS:
                continue
            part = part_registry(field)
            if (section, name) == ("", "algorithm"):
                allowed = (
                    ", ".join(f"`{a}`" for a in learners()) + " (`agents.LEARNERS`), or `module:factory`"
                )
            elif part is not None:
                allowed = ", ".join(f"`{a}`" for a in part.allowed()) + f" (`parts.{part.registry}`)"
            else:
                allowed = ""
            out.append(
                f"| `{prefix}{name}` | `{field.default!r}` | {allowed} | {_cell(field.description or '')} |"
            )
        out.append("")
    out += ["### Old flat keys (`FLAT_KEYS`)", "", "| old key (before 0.2.0) | key now |", "|---|---|"]
    out += [f"| `agent.{old}` | `agent.{new}` |" for old, new in FLAT_KEYS.items() if old != new]
    return "\n".join(out) + "\n"
