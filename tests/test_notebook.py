"""notebooks/inspect_features.ipynb runs headless (nbclient) on the session's tiny feature store
(``tiny_store`` / ``tiny_data`` fixtures of tests/conftest.py).

The kernel is the interpreter running the tests: a throw-away kernelspec whose argv starts with
``sys.executable`` is written into tmp_path and handed to nbclient through a KernelSpecManager,
so neither an installed ``python3`` kernelspec (``python -m ipykernel install``) nor the
Jupyter search path matters — a stale user-level ``python3`` spec pointing at another Python
cannot be picked up.  Only ipykernel must be importable (dev extra).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "inspect_features.ipynb"


def current_interpreter_kernel(tmp_path: Path):
    """A KernelManager that starts ipykernel with this very interpreter (no installed kernelspec needed)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec_dir = tmp_path / "kernels" / "frozenflow-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "FrozenFlow test kernel", "language": "python"}))
    ksm = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)], ensure_native_kernel=False)
    return KernelManager(kernel_name="frozenflow-test", kernel_spec_manager=ksm)


def test_notebook_has_no_stored_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"cell {cell.id} has stored outputs"


def test_notebook_runs_on_tiny_store(tiny_store, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("FROZENFLOW_STORE", str(tiny_store))
    monkeypatch.setenv("FROZENFLOW_DATA", str(tiny_data))
    monkeypatch.setenv("FROZENFLOW_SPLIT", "val")
    monkeypatch.setenv("FROZENFLOW_SAMPLE", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the notebook selects the inline backend itself
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, km=current_interpreter_kernel(tmp_path), timeout=120,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    cells = {c.id: c for c in nb.cells if c.cell_type == "code"}
    for c in cells.values():
        assert not [o for o in c.outputs if o.output_type == "error"], c.id

    def text(cell_id):
        out = []
        for o in cells[cell_id].outputs:
            if o.output_type == "stream":
                out.append(o.text)
            elif "data" in o:
                out += [o.data.get("text/plain", ""), o.data.get("text/html", "")]
        return "\n".join(out)

    meta = json.loads(text("metadata"))
    assert meta["splits"]["val"] == {**meta["splits"]["val"], "n": 8, "status": "complete"}
    assert "enc144" in text("dask") and "c144" in text("xarray") and "_done" not in text("xarray")
    summary, stats = text("stats-summary"), text("stats")
    for tap in ("enc144", "dec144", "enc36", "dec36", "enc9", "dec9"):
        assert tap in summary and tap in stats
    assert "max_rel_diff" in stats and "stored_mean" in stats
    pngs = [o for o in cells["montage"].outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == 1, [o.output_type for o in cells["montage"].outputs]
