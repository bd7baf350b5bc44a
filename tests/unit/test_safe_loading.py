"""No input path can execute code: no pickle/marshal/shelve, no eval/exec, ``torch.load`` only
with ``weights_only=True``, YAML only through the safe loader, msgpack with no ext hook but the one that rejects every ext type."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "shared" / "elsa").rglob("*.py"), *(ROOT / "services").rglob("*.py")])
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, what) for every code-executing deserialisation or evaluation in ``tree``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [(node.lineno, f"imports {n}") for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if isinstance(func, ast.Name) and name in {"eval", "exec", "compile", "__import__"}:
            found.append((node.lineno, f"calls {name}()"))
        if owner == "torch" and name == "load":
            flag = _keyword(node, "weights_only")
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append((node.lineno, "torch.load without weights_only=True"))
        if owner == "yaml" and name in {"load", "load_all", "unsafe_load", "full_load"}:
            found.append((node.lineno, f"yaml.{name} (use yaml.safe_load)"))
        hook = _keyword(node, "ext_hook")
        rejector = isinstance(hook, ast.Name) and hook.id == "_reject_ext"  # the wire's own
        if owner == "msgpack" and name in {"unpackb", "Unpacker"} and hook is not None and not rejector:
            found.append((node.lineno, "msgpack with an ext_hook"))
    return found


def test_the_audit_finds_what_it_looks_for() -> None:
    bad = ast.parse(
        "import pickle\nfrom marshal import loads\nimport torch, yaml, msgpack\n"
        "eval('1')\ntorch.load('x')\ntorch.load('x', weights_only=False)\nyaml.load(s)\n"
        "msgpack.unpackb(b, ext_hook=f)\n"
    )
    assert [line for line, _ in unsafe_uses(bad)] == [1, 2, 4, 5, 6, 7, 8]
    good = ast.parse("import torch, yaml\ntorch.load('x', weights_only=True)\nyaml.safe_load(s)\nm.eval()\n")
    assert unsafe_uses(good) == []


def test_library_and_services_never_deserialise_code() -> None:
    assert len(SOURCES) > 50
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path in SOURCES
        for line, what in unsafe_uses(ast.parse(path.read_text(), filename=str(path)))
    ]
    assert problems == []
