#!/usr/bin/env python3
"""Render docs/configuration.md from the ``Settings`` model, so the reference cannot drift from the code.

    python scripts/gen_config_reference.py           # rewrite docs/configuration.md
    python scripts/gen_config_reference.py --check   # exit 1 if the committed file is stale

Every field of :class:`issuer.settings.Settings` becomes one row: its environment
variable (derived from the model's ``env_prefix``, as pydantic-settings does),
type and allowed range, default, and ``description``. tests/test_docs.py runs
the same rendering and fails when the committed file differs.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "docs" / "configuration.md"

HEADER = """\
# Configuration reference

<!-- Generated from issuer/settings.py by scripts/gen_config_reference.py; do not edit by hand. -->

Every setting of the issuer is an environment variable. The server (`issuer
serve`) and every CLI command read the same variables once, at start-up, into
one frozen `Settings` object; a bad value stops the process with one line
naming the variable, for example
`error: ISSUER_TOKEN_LIFETIME: Input should be less than or equal to 900`.
Names are case-insensitive; unknown `ISSUER_*` variables are ignored.

This page is generated from the `description` of each field in
`issuer/settings.py` by `python scripts/gen_config_reference.py`, and
`tests/test_docs.py` fails when it is out of date. How the settings fit
together in a deployment is in [operations.md](operations.md).

| variable | type | default | description |
|---|---|---|---|
"""


def env_name(name: str, field: FieldInfo, prefix: str) -> str:
    """The environment variable pydantic-settings reads for one field."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):
        return alias.upper()
    return f"{prefix}{name}".upper()


def env_names() -> dict[str, str]:
    """Environment variable -> Settings field name, for every field."""
    from issuer.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    return {env_name(n, f, prefix): n for n, f in Settings.model_fields.items()}


def _number(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _type(field: FieldInfo) -> str:
    ann = field.annotation
    if typing.get_origin(ann) is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in typing.get_args(ann))
    kind = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(ann, str(ann))
    low = high = None
    low_strict = False
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            low = m.ge
        elif isinstance(m, annotated_types.Gt):
            low, low_strict = m.gt, True
        elif isinstance(m, annotated_types.Le):
            high = m.le
    if low is not None and high is not None:
        return f"{kind}, {'>' if low_strict else ''}{_number(low)} to {_number(high)}"
    if low is not None:
        return f"{kind}, {'>' if low_strict else '>='} {_number(low)}"
    return kind


def _default(field: FieldInfo) -> str:
    v = field.default
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if v == "":
        return "(empty)"
    return f"`{_number(v) if isinstance(v, float) else v}`"


def render() -> str:
    from issuer.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    rows = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise SystemExit(f"Settings.{name} has no description=; add one in issuer/settings.py")
        description = " ".join(field.description.split()).replace("|", "\\|")
        rows.append(f"| `{env_name(name, field, prefix)}` | {_type(field)} | {_default(field)} | {description} |")
    return HEADER + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python scripts/gen_config_reference.py",
                  file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
