"""What a Python file imports, read from its source without running it: the tests that
check every import of the package, the benchmarks and gpu_check is installed."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Set


def imported_top_level_modules(path: Path) -> Set[str]:
    """Every absolute import in a file, module level or inside functions, by top name."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module.split(".")[0])
    return modules
