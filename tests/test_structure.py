"""The package's shape: no import circles, late imports only where they pay,
short functions, and a README flag table generated from the settings."""

import ast
import os
import re

import pytest

from nst_keras import cli, settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "nst_keras")
# Imports allowed inside functions: TensorFlow and friends (slow to start, or
# optional), and the package modules that import TensorFlow at their top.
LATE_OK = ("tensorflow", "keras", "scipy", "matplotlib", "nst_keras.pipeline",
           "nst_keras.experiments", "nst_keras.film")


def modules():
    """``{dotted name: (path, ast)}`` of every module of the package."""
    out = {}
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                rel = rel[: -len(".__init__")] if rel.endswith(".__init__") else rel
                with open(path) as f:
                    out[rel] = (path, ast.parse(f.read()))
    return out


MODULES = modules()


def imported_names(node, known):
    """Package modules an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in known]
    if node.module is None or not node.module.startswith("nst_keras"):
        return []
    subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known]
    names_only = len(subs) < len(node.names)  # names from the module itself, not submodules
    return subs + ([node.module] if names_only and node.module in known else [])


def top_level_graph():
    graph = {}
    for name, (_, tree) in MODULES.items():
        edges = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(imported_names(node, MODULES))
        graph[name] = edges - {name}
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_import_graph_has_no_circle():
    graph = top_level_graph()
    assert "nst_keras.pipeline" in graph and graph["nst_keras.pipeline"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # The checker finds a circle when there is one.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_low_modules_stay_low():
    graph = top_level_graph()
    for low in ("nst_keras.settings", "nst_keras.vgg", "nst_keras.imaging",
                "nst_keras.objective", "nst_keras.optim", "nst_keras.callbacks"):
        assert "nst_keras.pipeline" not in graph[low] and "nst_keras.cli" not in graph[low]
    assert graph["nst_keras.imaging"] <= {"nst_keras.errors"}  # no settings, no network
    assert "nst_keras.settings" not in graph["nst_keras.objective"]


def function_imports():
    """``(module, line, imported, source line)`` of every import inside a function."""
    found = []
    for name, (path, tree) in MODULES.items():
        with open(path) as f:
            lines = f.read().splitlines()
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    targets = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    targets = [f"{node.module}.{a.name}" if node.module == "nst_keras"
                               else node.module or "" for a in node.names]
                else:
                    continue
                for target in targets:
                    found.append((name, node.lineno, target, lines[node.lineno - 1]))
    return found


def test_imports_inside_functions_are_the_deliberate_late_ones_with_a_reason():
    found = function_imports()
    assert found, "the late TensorFlow imports should be seen"
    for module, line, target, source in found:
        allowed = any(target == t or target.startswith(t + ".") for t in LATE_OK)
        assert allowed, f"{module}:{line} imports {target} inside a function"
        assert "# " in source and "late" in source.split("#", 1)[1], \
            f"{module}:{line} needs a one-line reason ('# late: ...')"


@pytest.mark.parametrize("kind,limit", [(ast.FunctionDef, 60), (ast.ClassDef, 150)])
def test_functions_and_classes_are_short(kind, limit):
    long = []
    for name, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, kind) and node.end_lineno - node.lineno + 1 > limit:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long


def test_every_setting_is_a_flag_with_help_and_the_same_default():
    names = set(settings.FIELDS)
    assert set(cli.FLAGS) == names  # one flag per field, nothing else
    cli.parse(["prog", "--content_image=c.png", "--style_image=s.png", "--output_dir=x"])
    from_flags = cli.config_from_flags()
    python = settings.Config(content_image="c.png", style_image="s.png", output_dir="x")
    assert settings.to_dict(from_flags) == settings.to_dict(python)
    for name in names:
        assert len(settings.FIELDS[name].metadata["help"]) > 10, name


def test_resume_policy_comes_from_the_fields():
    assert settings.RESUME_MAY_CHANGE == {
        "iterations", "save_every", "log_every", "overwrite", "resume", "check_memory",
        "output_dir"}


def test_readme_flag_table_is_generated_from_the_settings():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    match = re.search(r"<!-- flags:start -->\n(.*?)<!-- flags:end -->", readme, re.S)
    assert match, "README.md needs the <!-- flags:start --> ... <!-- flags:end --> block"
    assert match.group(1) == settings.flag_table(), (
        "the README's flag table drifted; regenerate it with python -m nst_keras.settings")
    for name in settings.FIELDS:
        assert f"`--{name}`" in match.group(1)
