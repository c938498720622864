"""Render docs/deploy.md's role variable tables from each role's meta/argument_specs.yml.

The argument specs are the one documentation of a role's variables (Ansible validates them and
ansible-doc shows them); docs/deploy.md shows the same facts as tables so a reader of the docs need not
open YAML. The tables sit between markers and are never edited by hand:

    <!-- BEGIN role-variables ROLE -->
    ...
    <!-- END role-variables ROLE -->

    python scripts/render_role_variables.py           rewrite the tables in docs/deploy.md
    python scripts/render_role_variables.py --check   exit 1, naming each stale role, if they differ

Exit codes: 0 current (or rewritten), 1 stale tables (--check), 2 bad input (spec or markers), named.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "deploy.md"
ROLES = REPO / "roles"
ENTRY_POINT = "main"
HEADER = "| Variable | Default | Description |\n|---|---|---|\n"
BLOCK = re.compile(
    r"(?P<begin><!-- BEGIN role-variables (?P<role>[a-z0-9_]+) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<end><!-- END role-variables (?P=role) -->)",
    re.DOTALL,
)


class SpecError(Exception):
    """Bad input: a spec or the markers in the document. The message names the file and the key."""


def _code(text: str) -> str:
    return f"`{text}`"


def _cell(text: str) -> str:
    """One table cell: a line of its own, a literal | escaped so it does not split the row."""
    return " ".join(text.split()).replace("|", "\\|")


def render_value(value: object) -> str:
    """A default or a choice as the reader writes it in YAML: strings bare, "" for empty, the rest in flow style."""
    if isinstance(value, str):
        return _code(value if value else '""')
    dumped = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return _code(dumped.removesuffix("\n...").strip())


def _description(where: str, option: Mapping[str, object]) -> str:
    description = option.get("description")
    if isinstance(description, str) and description.strip():
        return _cell(description)
    if isinstance(description, list) and description and all(isinstance(d, str) for d in description):
        return _cell(" ".join(description))
    raise SpecError(f"{where}: no description (a string or a list of strings)")


def _default(option: Mapping[str, object], top_level: bool) -> str:
    if "default" in option:
        text = render_value(option["default"])
    elif option.get("required"):
        text = "(required)"
    else:
        # A top-level option without a default in the spec is computed by defaults/main.yml (its description
        # says how); a suboption without one is left unset.
        text = "(computed)" if top_level else "(unset)"
    choices = option.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not choices:
            raise SpecError("choices: not a non-empty list")
        text += "<br>one of " + ", ".join(render_value(c) for c in choices)
    return text


def _rows(where: str, options: object, prefix: str = "") -> list[str]:
    if not isinstance(options, dict):
        raise SpecError(f"{where}: options is not a mapping")
    rows: list[str] = []
    for name, option in options.items():
        here = f"{where}.{name}"
        if not isinstance(option, dict):
            raise SpecError(f"{here}: not a mapping")
        try:
            default = _default(option, top_level=not prefix)
        except SpecError as error:
            raise SpecError(f"{here}: {error}") from None
        rows.append(f"| {_code(prefix + str(name))} | {default} | {_description(here, option)} |")
        if "options" in option:
            rows.extend(_rows(here, option["options"], f"{prefix}{name}[]."))
    return rows


def load_options(spec_file: Path) -> dict[str, object]:
    """The options of the main entry point of one role's argument specs."""
    try:
        data = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise SpecError(f"{spec_file}: {error}") from None
    try:
        options = data["argument_specs"][ENTRY_POINT]["options"]
    except (TypeError, KeyError):
        raise SpecError(f"{spec_file}: no argument_specs.{ENTRY_POINT}.options") from None
    if not isinstance(options, dict):
        raise SpecError(f"{spec_file}: argument_specs.{ENTRY_POINT}.options is not a mapping")
    return options


def render_table(options: Mapping[str, object], where: str = "options") -> str:
    """The Markdown table of one role's variables, in the spec's order; suboptions follow their list."""
    return HEADER + "".join(row + "\n" for row in _rows(where, dict(options)))


def render_document(text: str, roles: Path) -> tuple[str, list[str]]:
    """The document with every marked table re-rendered, and the roles whose table changed."""
    seen: list[str] = []
    stale: list[str] = []

    def replace(match: re.Match[str]) -> str:
        role = match["role"]
        spec_file = roles / role / "meta" / "argument_specs.yml"
        if not spec_file.is_file():
            raise SpecError(f"marker names role {role!r}, but {spec_file} does not exist")
        seen.append(role)
        table = render_table(load_options(spec_file), f"{spec_file}: {ENTRY_POINT}")
        if match["body"] != table:
            stale.append(role)
        return match["begin"] + table + match["end"]

    new = BLOCK.sub(replace, text)
    duplicated = sorted({r for r in seen if seen.count(r) > 1})
    if duplicated:
        raise SpecError(f"role-variables markers appear more than once for {', '.join(duplicated)}")
    specs = {p.parents[1].name for p in roles.glob("*/meta/argument_specs.yml")}
    missing = sorted(specs - set(seen))
    if missing:
        raise SpecError(f"no <!-- BEGIN/END role-variables ROLE --> markers for {', '.join(missing)}")
    return new, stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables differ from the specs")
    parser.add_argument("--doc", type=Path, default=DOC, help="document holding the tables (default: %(default)s)")
    parser.add_argument("--roles", type=Path, default=ROLES, help="roles directory (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = args.doc.read_text(encoding="utf-8")
        new, stale = render_document(text, args.roles)
    except (OSError, SpecError) as error:
        print(f"render_role_variables: {error}", file=sys.stderr)
        return 2
    if args.check:
        for role in stale:
            print(
                f"{args.doc}: the variable table of {role} is stale; run python3 scripts/render_role_variables.py",
                file=sys.stderr,
            )
        return 1 if stale else 0
    if new != text:
        args.doc.write_text(new, encoding="utf-8")
        print(f"{args.doc}: rewrote the tables of {', '.join(stale)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
