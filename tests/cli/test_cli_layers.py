"""The command line stays a skin (STYLE.md §1, §4): one error handler, one render module, no ledger rules."""

from __future__ import annotations

import ast
from pathlib import Path

from ledger import errors

COMMANDS = Path(__file__).resolve().parents[2] / "commands"
ERROR_NAMES = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.LedgerError)}
# the fold, its driver and the views are the library's business: a command calls one function that uses them
LEDGER_INTERNALS = {"ledger.views", "ledger.fold", "ledger.rules", "ledger.replay", "ledger.parallel"}


def _modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(), str(p)) for p in sorted(COMMANDS.glob("*.py"))}


def _imported(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_errors_become_exit_statuses_in_one_place() -> None:
    """Only commands/_errors.py catches the library's errors; no command has a handler of its own."""
    wrong = []
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                wrong += [f"{name}: @{ast.unparse(d)} on {node.name}" for d in node.decorator_list
                          if "handle_errors" in ast.unparse(d)]
            if isinstance(node, ast.ExceptHandler) and node.type is not None and name != "_errors.py":
                caught = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node.type)
                          if isinstance(n, ast.Name | ast.Attribute)}
                wrong += [f"{name}:{node.lineno} catches {c}" for c in caught & ERROR_NAMES]
    assert not wrong, "\n".join(wrong)


def test_no_ledger_rules_or_typer_internals_in_commands() -> None:
    """Commands reach no further into the library than its entry points, and into Typer by its public names."""
    wrong = []
    for name, tree in _modules().items():
        imported = _imported(tree)
        wrong += [f"{name} imports {m}" for m in sorted(imported)
                  if m.startswith(("typer._", "click")) or m in LEDGER_INTERNALS]
    assert not wrong, "\n".join(wrong)


def test_one_render_module_writes_stdout() -> None:
    """Data reaches stdout through `render` alone (so a closed pipe and escaping are handled once), and the
    JSON of findings and of steps is built in one place."""
    wrong = []
    for name, tree in _modules().items():
        if name == "render.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                to_stderr = any(k.arg == "err" for k in node.keywords)
                if called in ("typer.echo", "print", "sys.stdout.write") and not to_stderr \
                        and not (name == "main.py" and "_version" in ast.unparse(node)):
                    wrong.append(f"{name}:{node.lineno} writes stdout with {called}")
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if {"code", "serial", "index", "detail"} <= keys or {"kind", "signer", "participant"} <= keys:
                    wrong.append(f"{name}:{node.lineno} builds the JSON of a finding or a step")
    assert not wrong, "\n".join(wrong)
