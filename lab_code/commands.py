"""`python -m lab_code.<side> <command> ...`: run one module of a side as a command.

    python -m lab_code.serving                   # list the serving side's commands
    python -m lab_code.serving app --port 7860   # the same as python -m lab_code.serving.app ...

A command is a module of the side that runs as a script (it ends in `if __name__ ==
"__main__":`); the first sentence of its docstring is its description. Listing them reads the files
and imports none of them, so `--help` is instant even where a command loads torch or Gradio.
"""

from __future__ import annotations

import ast
import re
import runpy
import sys
from pathlib import Path

SCRIPT_GUARD = 'if __name__ == "__main__":'


def commands(folder: str | Path) -> dict[str, str]:
    """The commands in a side's folder: module name -> the first sentence of its docstring."""
    found = {}
    for path in sorted(Path(folder).glob("*.py")):
        text = path.read_text(encoding="utf-8")
        if path.stem.startswith("_") or SCRIPT_GUARD not in text:
            continue
        paragraph = " ".join((ast.get_docstring(ast.parse(text)) or "").split("\n\n")[0].split())
        sentence = re.split(r"(?<=[.:;])\s", paragraph, maxsplit=1)[0].rstrip(".:;")
        found[path.stem] = sentence if len(sentence) <= 100 else sentence[:99] + "…"
    return found


def usage(package: str, known: dict[str, str]) -> str:
    width = max(map(len, known), default=0)
    rows = "\n".join(f"  {name:<{width}}  {line}" for name, line in known.items())
    return (f"usage: python -m {package} COMMAND [--help | ARGS...]\n\ncommands:\n{rows}\n\n"
            f"`python -m {package} COMMAND --help` shows a command's own options.")


def main(package: str, folder: str | Path, argv: list[str] | None = None) -> int:
    """Run `python -m {package}.{argv[0]}` with the rest of argv, in this process."""
    argv = sys.argv[1:] if argv is None else argv
    known = commands(folder)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(package, known))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in known:
        print(f"error: {package} has no command {name!r}: use one of {', '.join(known)} "
              f"(python -m {package} --help lists them).", file=sys.stderr)
        return 2
    sys.argv = [f"{package} {name}", *rest]
    runpy.run_module(f"{package}.{name}", run_name="__main__", alter_sys=True)
    return 0
