"""Render ``docs/configuration.md`` from ``Settings``: ``python -m bastion.configdoc``."""

from __future__ import annotations

import sys

from bastion.config import Settings


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Generated from `bastion.config.Settings` by `python -m bastion.configdoc` — do not edit.",
        "",
        "Every setting can be given as an environment variable `BASTION_<NAME>` or as a key in",
        "the TOML file named by `BASTION_CONFIG`; command-line flags of `bastion serve` win over",
        "both, environment variables win over the file. Unknown keys are an error.",
        "",
        "| setting | env | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            shown = "—"
        elif isinstance(default, tuple) and default:
            shown = "<br>".join(f"`{item}`" for item in default)
        else:
            shown = f"`{default}`"
        lines.append(f"| `{name}` | `BASTION_{name.upper()}` | {shown} | "
                     f"{(field.description or '').replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
