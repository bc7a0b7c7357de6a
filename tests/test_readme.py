"""The README's set-up promise: exactly two commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S)]


def test_exactly_two_one_line_commands():
    cmds = setup_commands()
    assert len(cmds) == 2
    assert all("\n" not in c for c in cmds)
    assert "godprof estimate" in cmds[0] and "pytest" in cmds[1]
    assert "torch==2.13.0" in cmds[1], "a bare torch requirement may pull a multi-GB CUDA build"


def test_ci_runs_the_readme_test_command():
    script = ROOT / ".ci" / "run"
    awk = re.search(r"cmd=\$\(awk '(.*?)' README.md\)", script.read_text()).group(1)
    out = subprocess.run(["awk", awk, "README.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == setup_commands()[1]
