"""Every file the docs name exists, every test they cite is defined, every relative link resolves:
the manual (README.md, docs/*.md) moves with the code or fails here."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "cornernet_deploy"
SOURCE_SUFFIXES = (".py", ".md", ".sh", ".h", ".cpp", ".cu", ".toml", ".txt", ".gz", ".json", ".pt")
# what the docs' commands write or ask the reader to make, and paths outside the repository
NOT_OURS = re.compile(r"^(demo_output|runs|detections|export/\w+\.onnx|build/|data/|include/|triton_repo|"
                      r"\.venv|\.\.|\./|/|~|\$|-)|\.engine$|NAME|MODEL|ENGINE|myrt|[*<>{]")


def _code_spans(text: str):
    text = re.sub(r"```.*?```", "", text, flags=re.S)      # commands, not references
    return re.findall(r"`([^`\s]+)`", text)


def _resolve(name: str):
    for base in (ROOT, PACKAGE):
        if (base / name).exists():
            return base / name
    return None


def missing_files(pages) -> list:
    """The files, folders and tests named in ``pages`` (code spans outside code blocks) that do not
    exist; a path is tried from the repository's root and from the package's."""
    missing = []
    for page in pages:
        for span in _code_spans(page.read_text()):
            name, _, test = span.partition("::")
            last = name.rstrip("/").rsplit("/", 1)[-1]
            if "/" not in name or NOT_OURS.search(name) or ("." in last and not last.endswith(SOURCE_SUFFIXES)):
                continue                          # not a path, not ours, or not a source file
            path = _resolve(name)
            if path is None:
                missing.append(f"{page.name}: {span}")
            elif test and not re.search(rf"^def {re.escape(test.rstrip('*'))}", path.read_text(), re.M):
                missing.append(f"{page.name}: {span} (no such test)")
    return missing


def broken_links(pages) -> list:
    """Relative markdown links of ``pages`` whose target does not exist."""
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"^[a-z]+://", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.name}: {target}")
    return broken


def test_every_file_the_docs_name_exists():
    assert missing_files(PAGES) == []


def test_every_relative_link_resolves():
    assert broken_links(PAGES) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`runtime/pipline.py`, `runtime/pipeline.py`, `tests/contract/test_contract.py::test_gone`, "
                    "`tests/contract/test_contract.py::test_the_named_layer_leaks_are_gone`, "
                    "`demo_output/demo_model.onnx`, [x](missing.md), [y](../page.md)\n"
                    "```sh\ncat `not/checked.py`\n```\n")
    assert missing_files([page]) == ["page.md: runtime/pipline.py",
                                     "page.md: tests/contract/test_contract.py::test_gone (no such test)"]
    assert broken_links([page]) == ["page.md: missing.md", "page.md: ../page.md"]
