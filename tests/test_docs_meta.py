"""Meta-tests of docs/plugins.md: every hook documented with its exact signature and tested.

Like datasette's tests/test_docs.py: a hook added to ``benchstack.hookspecs`` fails here until
docs/plugins.md has a ``### bench_x`` section with its signature (as printed by
``python tests/test_docs_meta.py``) and some test file mentions it. Records, the launcher's
methods, the test kit's public names and the environment variables must be documented too.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs
import pytest

import benchstack.records as records
import benchstack.testing as kit
from benchstack import hookspecs
from benchstack.launcher import Launcher

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
TEST_TREES = ["core/tests", "plugins", "tests", "examples/plugins"]


def hook_specs() -> dict[str, object]:
    marker = f"{hookspecs.PROJECT}_spec"
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("bench_") and hasattr(fn, marker)}


def signature(fn) -> str:
    """The one-line signature docs/plugins.md shows: ``def bench_x(a: T, ...) -> R``."""
    sig = inspect.signature(fn)

    def text(annotation) -> str:  # hookspecs.py uses postponed (string) annotations
        return annotation.strip("'\"") if isinstance(annotation, str) else annotation.__name__

    params = ", ".join(f"{p.name}: {text(p.annotation)}" for p in sig.parameters.values())
    return f"def {fn.__name__}({params}) -> {text(sig.return_annotation)}"


def sections(doc: str) -> dict[str, str]:
    """``### bench_x`` sections of the doc, by hook name."""
    parts = re.split(r"^### (bench_\w+)\s*$", doc, flags=re.M)
    return {parts[i]: re.split(r"^#{1,3} ", parts[i + 1], flags=re.M)[0]
            for i in range(1, len(parts), 2)}


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text()


def hook_doc_problems(doc: str) -> list[str]:
    """What docs/plugins.md gets wrong about the hooks, one line per problem."""
    found = sections(doc)
    problems = []
    for name, fn in hook_specs().items():
        if name not in found:
            problems.append(f"{name}: no '### {name}' section in {DOC.name}")
            continue
        if f"```python\n{signature(fn)}\n```" not in found[name]:
            problems.append(f"{name}: its section lacks the signature block\n    {signature(fn)}")
        firstresult = getattr(fn, f"{hookspecs.PROJECT}_spec")["firstresult"]
        if firstresult != ("`firstresult`" in found[name]):
            problems.append(f"{name}: the section must say `firstresult` iff the hook is "
                            f"firstresult ({firstresult})")
    stale = sorted(set(found) - set(hook_specs()))
    return problems + [f"{name}: documented in {DOC.name} but not a hook spec" for name in stale]


def test_every_hook_is_documented_with_its_exact_signature(doc):
    problems = hook_doc_problems(doc)
    assert not problems, "\n".join(problems)


def test_the_meta_test_names_what_is_wrong(doc):
    broken = doc.replace("### bench_submit\n", "### bench_submitt\n")
    broken = broken.replace("dry_run: bool) -> Allocation | None", "dry_run) -> Allocation | None")
    assert hook_doc_problems(broken) == [
        "bench_allocate: its section lacks the signature block\n"
        "    def bench_allocate(spec: RunSpec, dry_run: bool) -> Allocation | None",
        f"bench_submit: no '### bench_submit' section in {DOC.name}",
        f"bench_submitt: documented in {DOC.name} but not a hook spec"]


def test_every_hook_appears_in_a_test(doc):
    texts = [p.read_text() for tree in TEST_TREES for p in sorted((ROOT / tree).rglob("test_*.py"))
             if p.resolve() != Path(__file__).resolve()]
    untested = [name for name in hook_specs() if not any(name in t for t in texts)]
    assert not untested, f"hooks no test file mentions: {', '.join(untested)}"


def test_records_launcher_kit_and_env_are_documented(doc):
    names = [n for n, obj in vars(records).items() if attrs.has(obj) and obj.__module__ == records.__name__]
    names += [n for n, obj in vars(Launcher).items()
              if callable(obj) and (not n.startswith("_") or n == "_start") and n != "__init__"]
    names += ["ports", "dry_run", "PortAllocator", "PlanLauncher"]
    names += [n for n in kit.__all__ if n not in ("UPDATE_GOLDEN_ENV",)]
    names += ["bench_manager", "bench_recipe", "bench_cli", "bench_timed_server", "bench_no_leftovers"]
    names += ["benchstack.plugins", "BENCHSTACK_BLOCK_PLUGINS", "BENCHSTACK_EXTRA_PLUGINS",
              "BENCHSTACK_TRACE_HOOKS", "-p benchstack.testing"]
    code = "\n".join(re.findall(r"```.*?```|`[^`\n]+`", doc, flags=re.S))  # as code, not prose
    missing = [n for n in names if not re.search(rf"(?<!\w){re.escape(n)}(?!\w)", code)]
    assert not missing, f"not mentioned in {DOC.name}: {', '.join(missing)}"


def test_docs_signatures_match_how_pluggy_calls_the_hooks():
    # the doc's argument names are the keywords benchstack passes; an implementation may take any
    # subset of them, which only works if they are exactly the spec's
    for name, fn in hook_specs().items():
        assert list(inspect.signature(fn).parameters) == re.findall(r"(\w+):", signature(fn).split("->")[0])


if __name__ == "__main__":  # print the signature lines for docs/plugins.md
    for fn in hook_specs().values():
        print(signature(fn))
