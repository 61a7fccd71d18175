"""Start-up: every command pays for what `commands.main` imports, so the heavy, single-command modules load on use."""

from __future__ import annotations

import subprocess
import sys

from commands import demo_cmd
from ledger import demo
from tests.conftest import ROOT

ON_USE = ("ledger.demo", "ledger.transfer", "ledger.epcis", "ledger.visual", "ledger.visual_html", "ledger.witness",
          "ledger.service", "uvicorn", "starlette", "httpx")


def test_the_cli_starts_without_the_single_command_modules() -> None:
    code = "import sys, commands.main; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    loaded = set(done.stdout.split())
    assert "commands.main" in loaded
    assert [name for name in ON_USE if name in loaded] == []


def test_the_demo_default_is_the_scenario_default() -> None:
    assert demo_cmd.DEFAULT_UNITS == demo.DEFAULT_UNITS == 240
