"""docs/EXTENDING.md's snippets against the code on main: each is loaded as the module it would be
and driven through the real registry, families and CLI (in a subprocess, so that the registered
example backend or command never reaches another test)."""
import ast
import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXTENDING = ROOT / "docs" / "EXTENDING.md"
DEMO_CHECKPOINT = ROOT / "cornernet_deploy" / "assets" / "demo_squeeze_shapes.pt"


def snippets() -> dict:
    """``<!-- snippet: NAME -->`` followed by a fenced block -> {NAME: code}."""
    found = re.findall(r"<!-- snippet: ([a-z-]+) -->\n```\w*\n(.*?)\n```", EXTENDING.read_text(), re.S)
    return {name: code + "\n" for name, code in found}


def run_as_module(code: str, module: str, script: str, tmp_path, *args) -> subprocess.CompletedProcess:
    """Run ``script`` after loading ``code`` as the module ``module`` of the package."""
    source = tmp_path / "snippet.py"
    source.write_text(code)
    prelude = textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location({module!r}, {str(source)!r})
        snippet = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = snippet
        spec.loader.exec_module(snippet)
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(script), *map(str, args)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_the_page_has_the_snippets_the_tests_read():
    assert sorted(snippets()) == ["backend", "cli-line", "command", "family", "recipe"]


def test_the_backend_module_registers_and_every_command_takes_it_unchanged(tmp_path):
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "scene.png"), np.full((64, 64, 3), 127, np.uint8))
    (tmp_path / "model.myrt").write_bytes(b"not a model")
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    done = run_as_module(snippets()["backend"], "cornernet_deploy.runtime.backends.myrt", """
        from cornernet_deploy.cli import main
        from cornernet_deploy.errors import UserError
        from cornernet_deploy.runtime.backends import open_backend, registry

        print("owner", registry.backend_for("model.myrt").name, registry.get("my").name)
        print("listed", [info.name for info in registry.all_backends()])
        print("devices", registry.devices())
        try:
            open_backend("model.onnx", device="npu")
        except UserError as exc:
            print("onnx on npu:", exc)
        print("rc", main(["infer", "model.myrt", "scene.png", "--device", "npu", "--output", "out"]))
    """, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "owner myrt myrt" in out
    listed = ast.literal_eval(out.split("listed ", 1)[1].splitlines()[0])
    assert {"myrt", "onnxruntime", "tensorrt", "torch"} <= set(listed)    # beside the built-in ones
    assert "'npu'" in out.split("devices", 1)[1].splitlines()[0]
    assert "onnx on npu: model.onnx: the onnxruntime backend runs on cpu or cuda" in out
    # `infer` (unchanged) parses --device npu and reaches the new backend's opener, which says
    # what is missing in one line; nothing is written
    assert "rc 2" in out
    assert done.stderr.strip().splitlines()[-1] == ("error: the myrt backend needs the myrt package: "
                                                    "pip install myrt")
    assert not (tmp_path / "out").exists()


def test_the_command_module_runs_through_the_real_cli(tmp_path):
    code, cli_line = snippets()["command"], snippets()["cli-line"]
    entry = ast.literal_eval("{" + cli_line.strip().rstrip(",") + "}")
    done = run_as_module(code, "cornernet_deploy.commands.labels", f"""
        from cornernet_deploy import cli
        cli.COMMANDS.update({entry!r})
        print("rc", cli.main(["labels", sys.argv[1], "--output", "labels.txt"]))
        print("rc", cli.main(["labels", "missing.onnx", "--output", "other.txt"]))
        try:
            cli.main(["labels", sys.argv[1]])
        except SystemExit as exc:
            print("rc", exc.code)
    """, tmp_path, DEMO_CHECKPOINT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("rc ")[1:] == ["0\n", "2\n", "2\n"], done.stdout
    assert "wrote labels.txt (3 classes)" in done.stdout
    # the demo model was trained on the synthetic shapes: rectangles, ellipses, triangles
    assert (tmp_path / "labels.txt").read_text() == "rectangle\nellipse\ntriangle\n"
    assert "error: missing.onnx: no such file" in done.stderr
    assert not (tmp_path / "other.txt").exists()


def _methods(code: str, class_name: str) -> set:
    tree = ast.parse(code)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name)
    return {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}


def test_the_family_overrides_the_family_interface_and_plugs_in():
    from cornernet_deploy.contract.arch import get_arch
    from cornernet_deploy.runtime import families

    code = snippets()["family"]
    interface = {name for name, _ in inspect.getmembers(families.Family, inspect.isfunction)}
    assert _methods(code, "CenterPooling") <= interface
    # the snippet, placed in runtime/families.py, defines a working family there
    namespace = dict(vars(families))
    exec(compile(code, "EXTENDING.md (family)", "exec"), namespace)
    family = namespace["CENTER_POOLING"]
    assert isinstance(family, families.Family) and len(namespace["FAMILIES"]) == 3
    spec = get_arch("cornernet-squeeze")
    assert family.network_input_hw(spec, None) is None
    assert family.network_input_hw(spec, (255, 383)) == (255, 383)
    assert family.default_dynamic_size(None) is True
    module, _, attribute = family.training_recipe.partition(":")
    assert module == families.SINGLE_PASS.training_recipe.partition(":")[0]
    assert attribute.endswith("_RECIPE")


def test_the_recipe_overrides_the_recipe_interface():
    from cornernet_deploy.train import recipes

    code = snippets()["recipe"]
    interface = {name for name, _ in inspect.getmembers(recipes.TrainingRecipe, inspect.isfunction)}
    assert _methods(code, "CenterPoolingRecipe") == interface == {"sample", "loss"}
    sample = ast.parse(code).body[0].body[0]
    assert [a.arg for a in sample.args.args] == list(inspect.signature(recipes.TrainingRecipe.sample).parameters)
