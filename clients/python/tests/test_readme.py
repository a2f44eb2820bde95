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
