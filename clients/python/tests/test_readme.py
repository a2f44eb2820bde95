"""The README's example test is test_example.py, verbatim; and the project README's five-line snippet runs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def python_blocks(markdown: str) -> list:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_the_readme_example_is_test_example_verbatim():
    readme = (HERE.parent / "README.md").read_text()
    example = (HERE / "test_example.py").read_text()
    assert example in python_blocks(readme), "README.md's example differs from tests/test_example.py"


def repository_readme() -> Path:
    return HERE.parent.parent.parent / "README.md"


def readme_example(markdown: str, group: str):
    """The fenced block after `<!-- example: GROUP file=NAME -->` (the README examples' marker): (NAME, code)."""
    match = re.search(r"^<!-- example: " + re.escape(group) + r" file=(\S+) -->\n```\w*\n(.*?)^```$", markdown,
                      flags=re.S | re.M)
    assert match, f"the repository README has no `<!-- example: {group} file=… -->` block"
    return match.group(1), match.group(2)


@pytest.mark.starts_server
def test_the_repository_readme_pytest_snippet_runs(tmp_path):
    name, code = readme_example(repository_readme().read_text(), "clients-python")
    assert len(code.strip().splitlines()) <= 5, "the README promises five lines"
    (tmp_path / name).write_text(code)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"^1 passed", run.stdout, flags=re.M), run.stdout
