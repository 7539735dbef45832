"""The codebase's own size rules (ARCHITECTURE.md): short modules and short functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raydenoise"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80


def test_no_module_over_450_lines_and_no_function_over_80():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        name = path.relative_to(PACKAGE.parent).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    assert not long_modules, long_modules
    assert not long_functions, long_functions
    assert len(list(PACKAGE.rglob("*.py"))) > 40  # the walk found the package
