"""The package's shape: layers that import only downwards, no import circles
(``importlib`` included), late imports only where they pay, short functions."""

import ast
import dataclasses
import glob
import os

import pytest

from nst_keras import cli, fields, settings
from nst_keras.app.options import ServerOptions
from nst_keras.batch.options import BatchOptions
from nst_keras.video.options import VideoOptions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "nst_keras")
# Imports allowed inside functions: TensorFlow and friends (slow to start, or
# optional), and the package modules that import TensorFlow at their top.
LATE_OK = ("tensorflow", "keras", "scipy", "ray", "tf2onnx", "nst_keras.engine.pipeline",
           "nst_keras.engine.build", "nst_keras.engine.network", "nst_keras.engine.training",
           "nst_keras.engine.tiling", "nst_keras.engine.terms",
           "nst_keras.engine.objective", "nst_keras.output.stylize", "nst_keras.experiments",
           "nst_keras.video.film", "nst_keras.video.network_film", "nst_keras.cli",
           "nst_keras.engine.flow")


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


def importlib_targets(node) -> list:
    """Modules ``importlib.import_module("...")`` names (string constants only)."""
    if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" \
            and node.args and isinstance(node.args[0], ast.Constant):
        return [node.args[0].value]
    return []


def import_graph(everywhere: bool = False):
    """``{module: package modules it imports}``: top-level statements and
    ``importlib.import_module`` calls; ``everywhere`` adds imports inside functions."""
    graph = {}
    for name, (_, tree) in MODULES.items():
        edges = set()
        nodes = ast.walk(tree) if everywhere else tree.body
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges.update(imported_names(node, MODULES))
        for node in ast.walk(tree):
            edges.update(m for m in importlib_targets(node) if m in MODULES)
        graph[name] = edges - {name}
    return graph


def top_level_graph():
    return import_graph()


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
    assert "nst_keras.engine.pipeline" in graph and graph["nst_keras.engine.pipeline"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    # The checker finds a circle when there is one.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_importlib_calls_are_edges_of_the_graph():
    tree = ast.parse("import importlib\nimportlib.import_module('nst_keras.pool')\n")
    found = [m for node in ast.walk(tree) for m in importlib_targets(node)]
    assert found == ["nst_keras.pool"]


# The layers, lowest first: a module imports only its own layer and lower ones,
# inside functions too; the wings never import one another; the docs' tables
# read every command's options.
LAYERS = (
    ("bottom", ("nst_keras.errors", "nst_keras.constants", "nst_keras.fields")),
    ("engine", ("nst_keras.settings", "nst_keras.engine")),
    ("output", ("nst_keras.output",)),
    ("commands", ("nst_keras.cli", "nst_keras.pool")),
    ("wings", ("nst_keras.run", "nst_keras.batch", "nst_keras.video", "nst_keras.app",
               "nst_keras.experiments", "nst_keras.train", "nst_keras.export")),
    ("docs", ("nst_keras.docs",)),
)
WINGS = [name for name, _ in LAYERS].index("wings")


# ``python -m nst_keras.run --experiment=...`` runs the experiments: one wing.
SAME_WING = {"nst_keras.experiments": "nst_keras.run"}


def layer_of(module: str):
    """``(layer index, unit)``: the unit is the wing a top-layer module belongs to."""
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return index, SAME_WING.get(prefix, prefix)
    return None, None


def layer_violations(graph) -> list:
    bad = []
    for module, edges in graph.items():
        mine, unit = layer_of(module)
        if mine is None:  # the package's front door (nst_keras/__init__.py)
            continue
        for target in edges:
            theirs, other = layer_of(target)
            if theirs is None:
                bad.append(f"{module} imports the package front door {target}")
            elif theirs > mine:
                bad.append(f"{module} ({LAYERS[mine][0]}) imports {target} "
                           f"({LAYERS[theirs][0]})")
            elif theirs == mine == WINGS and other != unit:
                bad.append(f"wing {module} imports another wing's {target}")
    return sorted(bad)


def test_lower_layers_never_import_higher_ones_nor_wings_each_other():
    graph = import_graph(everywhere=True)
    assert layer_violations(graph) == []
    assert all(layer_of(m)[0] is not None for m in graph if m != "nst_keras"), \
        [m for m in graph if m != "nst_keras" and layer_of(m)[0] is None]
    # The rule catches a violation when there is one.
    assert layer_violations({"nst_keras.engine.vgg": {"nst_keras.output.rundir"},
                             "nst_keras.video.film": {"nst_keras.batch"}}) == [
        "nst_keras.engine.vgg (engine) imports nst_keras.output.rundir (output)",
        "wing nst_keras.video.film imports another wing's nst_keras.batch"]


def test_the_engine_writes_no_file_layer_and_imaging_stays_low():
    graph = import_graph(everywhere=True)
    engine = [m for m in graph if m.startswith("nst_keras.engine")]
    assert len(engine) >= 8
    for module in engine:
        assert not any(t.startswith(("nst_keras.output", "nst_keras.cli")) for t in graph[module])
    assert graph["nst_keras.engine.imaging"] <= {"nst_keras.errors"}  # no settings, no network
    # Settings read the bottom only (constants, fields), never the engine.
    assert graph["nst_keras.settings"] <= {"nst_keras.errors", "nst_keras.constants",
                                           "nst_keras.fields"}
    assert graph["nst_keras.fields"] <= {"nst_keras.errors"}
    assert "nst_keras.settings" not in graph["nst_keras.engine.objective"]


# Calls that write, move or remove files: ``module.function`` on the module's
# usual name, and methods whose name writes whatever their object is.
WRITING_CALLS = {
    "os": {"replace", "rename", "renames", "remove", "unlink", "rmdir", "removedirs",
           "makedirs", "mkdir", "write", "fdopen", "truncate", "ftruncate", "link",
           "symlink", "chmod"},
    "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"},
    "tempfile": {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory",
                 "TemporaryFile", "SpooledTemporaryFile"},
    "np": {"save", "savez", "savez_compressed", "savetxt"},
    "numpy": {"save", "savez", "savez_compressed", "savetxt"},
    "json": {"dump"},
    "pickle": {"dump"},
}
WRITING_METHODS = {"save", "savefig", "tofile", "write_text", "write_bytes", "save_weights",
                   "save_img", "imwrite"}


def _opens_for_writing(call: ast.Call) -> bool:
    """``open(path, mode)`` (or ``io.open``) with a mode that writes, appends or creates."""
    func = call.func
    if not (isinstance(func, ast.Name) and func.id == "open") and \
            not (isinstance(func, ast.Attribute) and func.attr == "open" and
                 isinstance(func.value, ast.Name) and func.value.id == "io"):
        return False
    mode = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    if mode is None:
        return False
    if not isinstance(mode, ast.Constant):
        return True  # a mode computed at run time: assume the worst
    return any(c in str(mode.value) for c in "wax+")


def writing_calls(tree) -> list:
    """``(line, what)`` of every call in ``tree`` that writes a file."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if _opens_for_writing(node):
            found.append((node.lineno, "open(..., 'w')"))
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            if func.attr in WRITING_CALLS.get(owner, ()):
                found.append((node.lineno, f"{owner}.{func.attr}"))
            elif func.attr in WRITING_METHODS:
                found.append((node.lineno, f".{func.attr}(...)"))
    return found


def test_no_engine_module_writes_a_file():
    """The engine computes in memory and reports through callbacks; the file
    layer (``nst_keras.output``) writes: pictures, the precision cache file."""
    engine = {m: tree for m, (_, tree) in MODULES.items() if m.startswith("nst_keras.engine")}
    assert len(engine) >= 8
    bad = [f"{m}:{line} {what}" for m, tree in sorted(engine.items())
           for line, what in writing_calls(tree)]
    assert bad == []
    # The check sees each kind of write.
    sample = ast.parse(
        "open(p, 'w')\nopen(p, mode='ab')\nio.open(p, m)\nos.replace(a, b)\n"
        "tempfile.mkstemp()\nnp.savez(buf)\nimg.save(buf, format='PNG')\njson.dump(d, f)\n"
        "open(p)\nopen(p, 'rb')\nconfig.replace(x=1)\nsys.stdout.write('x')\n")
    assert [what for _, what in writing_calls(sample)] == [
        "open(..., 'w')", "open(..., 'w')", "open(..., 'w')", "os.replace", "tempfile.mkstemp",
        "np.savez", ".save(...)", "json.dump"]
    # ... and the file layer does write.
    assert writing_calls(MODULES["nst_keras.output.files"][1])


def test_at_most_ten_modules_at_the_top_of_the_package():
    top = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
    assert len(top) <= 10, sorted(top)


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
                    targets = [f"{node.module}.{a.name}"
                               if f"{node.module}.{a.name}" in MODULES
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


# Classes that are one field per option (they grow with the options, not with logic).
FIELD_LISTS = {"nst_keras.settings.Config"}


@pytest.mark.parametrize("kind,limit", [(ast.FunctionDef, 60), (ast.ClassDef, 150)])
def test_functions_and_classes_are_short(kind, limit):
    long = []
    for name, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if f"{name}.{getattr(node, 'name', '')}" in FIELD_LISTS:
                continue
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


def _video_flags():
    from nst_keras import video

    return video.FLAGS


def _batch_flags():
    from nst_keras import batch

    return batch.FLAGS


def _app_flags():
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from nst_keras.app import server

    return server.make_flags()


@pytest.mark.parametrize("command,options", [
    (_video_flags, VideoOptions), (_batch_flags, BatchOptions),
    (_app_flags, ServerOptions)], ids=["video", "batch", "app"])
def test_every_option_of_a_command_is_its_flag_with_the_same_default_and_help(command,
                                                                              options):
    flag_values, own = command(), fields.fields_of(options)
    assert own and set(flag_values) == set(settings.FIELDS) | set(own)
    for name, field in own.items():
        assert flag_values[name].help == fields.full_help(field), name
        assert len(field.metadata["help"]) > 10, name
    given = {n: f"{n}.x" for n, f in own.items() if f.default is dataclasses.MISSING}
    cli.parse(["prog", *(f"--{n}={v}" for n, v in given.items())], flag_values)
    assert cli.options_from_flags(options, flag_values) == options(**given)


def test_resume_policy_comes_from_the_fields():
    assert settings.RESUME_MAY_CHANGE == {
        "iterations", "save_every", "log_every", "overwrite", "resume", "check_memory",
        "output_dir"}


def test_every_slow_name_is_a_test():
    """A renamed test must not silently leave the slow list (tests/conftest.py)."""
    from conftest import SLOW

    names = set()
    for path in glob.glob(os.path.join(REPO, "tests", "test_*.py")):
        with open(path) as f:
            tree = ast.parse(f.read())
        names |= {f"{os.path.basename(path)}::{n.name}" for n in ast.walk(tree)
                  if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    assert SLOW and set(SLOW) <= names, sorted(set(SLOW) - names)
