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


def test_readme_python_blocks_run(tmp_path, launch):
    """Every ```python block of the README runs as written, one after another (a fresh
    process: conftest ``launch``)."""
    import sys
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(blocks))
    proc = launch([sys.executable, script], timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
