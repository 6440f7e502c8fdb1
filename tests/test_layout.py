"""The package's layers (README, "Package layout"): every module imports only downward, the deprecated alias
packages hold no code of their own, and the commands that need no model load neither onnx nor ml_dtypes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ortseal

ROOT = Path(ortseal.__file__).parent

# Each layer may import the layers before it (and itself), never one after it.
LAYERS = [
    {"ortseal._version", "ortseal.errors", "ortseal._log", "ortseal._atomic", "ortseal._files", "ortseal._parallel",
     "ortseal._progress", "ortseal._runtime", "ortseal._policy", "ortseal.signing", "ortseal.keys", "ortseal.pkcs11",
     "ortseal.trust", "ortseal._onnx_proto"},
    {"ortseal.blob"},
    {"ortseal.tensorrt"},
    {"ortseal.model"},
    {"ortseal.compiled"},  # the compiled-model cache opens sealed source models, so it sits above them
    {"ortseal.cli", "ortseal.hf"},  # the shells over the public API: the command line, optimum/sentence-transformers
]
ALIASES = {"ortseal.ops", "ortseal.ep_plugin"}  # deprecated: they import the new places, nothing imports them


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ortseal module ``path`` imports, at any depth of the file (imports inside functions count)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("ortseal")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ortseal"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}  # ``from . import fallback``: maybe a module
    return found


def _layer(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return i
    return None


MODULES = sorted(p for p in ROOT.rglob("*.py") if _module_name(p).split(".")[:2] != ["ortseal", "__main__"])


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_modules_import_only_downward(path):
    name = _module_name(path)
    if name in ALIASES or name == "ortseal":
        return  # the top level re-exports the public API from every layer, lazily; the aliases re-export
    own = _layer(name)
    assert own is not None, f"{name} is in no layer of this test: add it to LAYERS"
    for target in _imports(path):
        assert not any(target == a or target.startswith(a + ".") for a in ALIASES), f"{name} imports {target}"
        layer = _layer(target)
        if layer is None:  # ``from .. import x`` where x is not a module
            continue
        assert layer <= own, f"{name} (layer {own}) imports {target} (layer {layer}): layers import only downward"


def test_the_engine_cache_never_imports_sealed_models():
    for path in (ROOT / "tensorrt").glob("*.py"):
        assert not any(t.startswith(("ortseal.model", "ortseal.cli")) for t in _imports(path)), path


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_deprecated_aliases_only_reexport(alias):
    """No function, class or assignment but ``__all__``: the old names are the new objects."""
    tree = ast.parse((ROOT / alias.split(".")[1] / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.Expr) and
                                                             isinstance(node.value, (ast.Constant, ast.Call))):
            continue
        assert isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["__all__"], ast.dump(node)
    code = (f"import warnings, importlib; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    importlib.import_module({alias!r})\nexcept DeprecationWarning as w:\n    print('warned', w)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.startswith("warned") and alias in r.stdout, r.stdout + r.stderr


def test_deprecated_aliases_give_the_new_objects():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import ortseal.ep_plugin as ep_plugin
        import ortseal.ops as ops
    assert ops.seal_model is ortseal.seal_model and ops.InferenceSession is ortseal.InferenceSession
    assert ops.verify_model is ortseal.verify_model and ops.fallback_session_options is ortseal.fallback_session_options
    assert ep_plugin.tensorrt_provider is ortseal.tensorrt_provider
    assert ep_plugin.shim_path() == ortseal.tensorrt.shim_path()
    assert set(ops.__all__) <= set(dir(ops)) and set(ep_plugin.__all__) <= set(dir(ep_plugin))


# -- cold start: commands that need no model load no onnx ----------------------------------------------
HEAVY = ("onnx", "ml_dtypes")
RUN_AND_LIST = """
import json, sys
from ortseal.cli import main
try:
    main(sys.argv[1:], prog_name="ortseal")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (HEAVY,)


def _run(args: list[str], cwd: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", RUN_AND_LIST, *args], capture_output=True, text=True, cwd=cwd,
                       timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args, code", [
    (["--help"], 0),
    (["keygen", "-o", "new.json"], 0),
    (["pubkey", "keys.json", "-o", "public.json"], 0),
    (["device-keys", "keys.json", "-o", "device.json"], 0),
    (["inspect-keys", "keys.json"], 0),
    (["cache", "list", "cache"], 0),
    (["cache", "verify", "cache", "--keys", "keys.json"], 1),  # an empty cache: nothing to verify
    (["compiled", "list", "cache"], 0),
    (["compiled", "verify", "cache", "--keys", "keys.json"], 1),
    (["seal", "--help"], 0),
], ids=lambda a: " ".join(a) if isinstance(a, list) else str(a))
def test_commands_that_need_no_model_never_import_onnx(args, code, tmp_path):
    assert _run(["keygen", "-o", "keys.json"], tmp_path)["code"] == 0
    (tmp_path / "cache").mkdir()
    result = _run(args, tmp_path)
    assert result == {"code": code, "heavy": []}, result


def test_sealing_does_import_onnx(tmp_path):
    """The check above can fail: sealing builds ONNX protos with onnx, and the list shows it."""
    from models import transformer_like

    transformer_like(tmp_path / "m.onnx", d=8, vocab=16, seq=4)
    assert _run(["keygen", "-o", "keys.json"], tmp_path)["code"] == 0
    result = _run(["-q", "seal", "m.onnx", "-o", "s.onnx", "--keys", "keys.json"], tmp_path)
    assert result["code"] == 0 and "onnx" in result["heavy"], result


def _message_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (messages, hints, table text)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docstrings]


@pytest.mark.parametrize("path", [p for p in MODULES if _module_name(p).split(".")[1:2] != ["cli"]],
                         ids=lambda p: _module_name(p))
def test_library_messages_spell_no_cli_flags(path):
    """The library names its Python parameters (``overwrite=True``); the CLI says its flags (``cli_words``)."""
    import re

    flags = [s for s in _message_strings(path) if re.search(r"(?<![\w-])--[a-z][a-z-]+", s)]
    assert not flags, flags


def test_the_cli_says_its_flags_for_the_librarys_parameters():
    from ortseal.cli._kit import cli_words

    assert cli_words("no tensor to seal with min_bytes=4096, include='^w'; widen include=") == \
        "no tensor to seal with --min-bytes 4096, --include '^w'; widen --include"
    assert cli_words("m.onnx exists; choose another output, or replace it (overwrite=True)").endswith("--overwrite")
