"""Imports run one way: no two top-level packages import each other, no analysis module imports
itself back through others, the study's planning and execution never import its reporting, and the
ClientApp never loads the server's machinery (round loop, recorder, results files, checkpoints) nor torch,
nor, serving a message whose data is cached, the libraries that read raw records."""

import ast
import json
import pickle
import subprocess
import sys

import pytest
from folktables.load_acs import state_list

from core.states import FOLKTABLES_STATES
from tests.conftest import REPO, InProcessGrid, run_in_process

PACKAGES = sorted(p.name for p in REPO.iterdir() if (p / "__init__.py").exists() and p.name not in ("tests", "benchmarks"))
SERVER_SIDE = ("strategies.loop", "recorder", "fl_app.setup", "fl_app.server_app", "fl_app.check", "fl_app.deploy",
               "analysis", "core.torch_model", "torch")


# What only reading raw records needs: a deployment-engine message is a fresh process that finds its
# state's codes in the on-disk cache, and importing these cost it ~0.3 CPU s.
DATA_READERS = ("pandas", "pyarrow", "folktables")
STUDY_EXECUTION = ("analysis.study_plan", "analysis.study_run")
REPORTING = ("analysis.study_report", "analysis.study_tables", "analysis.report", "analysis.document", "matplotlib")


def imported_names(path) -> set[str]:
    """Absolute module names a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def analysis_imports() -> dict[str, set[str]]:
    """analysis module -> the analysis modules it imports."""
    modules = {f"analysis.{p.stem}": p for p in (REPO / "analysis").glob("*.py") if p.stem != "__init__"}
    return {m: {n for n in imported_names(p) if n in modules} - {m} for m, p in modules.items()}


def imported_packages(package: str) -> set[str]:
    """The other top-level packages that `package`'s modules import."""
    found = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found - {package}


def test_no_two_top_level_packages_import_each_other():
    edges = {p: imported_packages(p) for p in PACKAGES}
    mutual = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, set())})
    assert mutual == [], f"mutual imports: {mutual}"


def test_no_analysis_module_imports_itself_back():
    edges = analysis_imports()

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(n == target or (n not in seen and reaches(n, target, seen | {n})) for n in edges[start])

    circles = sorted(m for m in edges if reaches(m, m, {m}))
    assert circles == [], f"analysis modules on an import circle: {circles}"


def test_planning_and_executing_a_study_never_load_the_reporting():
    code = f"import sys, json, {', '.join(STUDY_EXECUTION)}; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                       check=True, timeout=120).stdout)
    assert [m for m in loaded if any(m == r or m.startswith(r + ".") for r in REPORTING)] == []
    assert set(STUDY_EXECUTION) <= set(loaded)


def test_the_shared_bottom_layer_imports_nothing_of_ours():
    assert imported_packages("core") == set()


def test_the_client_app_loads_no_server_side_module():
    code = "import sys, json, fl_app.client_app; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                       check=True, timeout=120).stdout)
    server = [m for m in loaded if any(m == s or m.startswith(s + ".") for s in SERVER_SIDE)]
    assert server == []


class LastTrainGrid(InProcessGrid):
    """Delivers as InProcessGrid does, keeping the last training message and its node's context."""

    kept: tuple | None = None

    def deliver(self, message):
        if message.metadata.message_type.startswith("train"):
            LastTrainGrid.kept = (message, self.contexts[message.metadata.dst_node_id])
        return super().deliver(message)


# A fresh process serving one message, as `flwr-clientapp` does: its reply, and every module it loaded.
SERVE_ONE = """
import json, pickle, sys
message, context = pickle.load(open(sys.argv[1], "rb"))
from fl_app.client_app import app
reply = app(message, context)
print(json.dumps({"error": reply.has_error(), "records": sorted(reply.content), "modules": sorted(sys.modules)}))
"""


@pytest.fixture(scope="module")
def served_from_cache(tmp_path_factory) -> dict:
    """A steady round's training message served in a fresh process, its state's codes already cached."""
    tmp = tmp_path_factory.mktemp("serve")
    run_in_process({"states": "AL,WY", "data-source": "synthetic", "synthetic-rows": 300, "num-server-rounds": 2},
                   tmp / "run", grid_class=LastTrainGrid)  # fills the on-disk codes cache, as round 1 does
    (tmp / "message.pkl").write_bytes(pickle.dumps(LastTrainGrid.kept))
    out = subprocess.run([sys.executable, "-c", SERVE_ONE, str(tmp / "message.pkl")], cwd=REPO, capture_output=True,
                         text=True, check=True, timeout=300)
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert not served["error"] and any(name.endswith("/arrays") for name in served["records"])  # it trained
    return served


def test_a_client_app_process_serving_a_message_from_cached_codes_loads_no_data_reader(served_from_cache):
    assert [m for m in served_from_cache["modules"] if m.split(".")[0] in DATA_READERS] == []


def test_a_client_app_process_loads_its_kernels_without_scipy_linalg(served_from_cache):
    assert "numba.np.arraymath" in served_from_cache["modules"]  # the kernels were loaded
    assert "scipy.linalg" not in served_from_cache["modules"]


def test_the_public_state_table_is_folktables_list():
    assert sorted(state_list) == list(FOLKTABLES_STATES)


def test_benchmarks_import_the_product_never_the_tests():
    found = {(path.name, node.lineno) for path in (REPO / "benchmarks").glob("*.py")
             for node in ast.walk(ast.parse(path.read_text()))
             if any(n.split(".")[0] == "tests" for n in
                    ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else []))}
    assert found == set()
