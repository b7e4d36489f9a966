"""The SDK ships on its own: it never imports the server package."""

from __future__ import annotations

import ast
from pathlib import Path

import client_sdk

SDK_ROOT = Path(client_sdk.__file__).parent


def test_no_sdk_module_imports_the_server_package() -> None:
    offenders = []
    for path in sorted(SDK_ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n == "sfu" or n.startswith("sfu.")]
    assert offenders == []
