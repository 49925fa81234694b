"""The README's commands are what CI runs."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bash_blocks(text):
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_ci_runs_exactly_the_readme_test_command():
    blocks = _bash_blocks((ROOT / "README.md").read_text())
    test_cmds = [b.strip() for b in blocks[:2] if "pytest" in b]
    assert len(test_cmds) == 1, "the README's second set-up command must run pytest"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmds[0] in ci, ".ci/run must contain the README's test command verbatim"


def test_readme_main_command_names_an_existing_launcher():
    main = _bash_blocks((ROOT / "README.md").read_text())[0]
    scripts = re.findall(r"python (launch/\S+\.py)", main)
    assert scripts and all((ROOT / s).exists() for s in scripts)
