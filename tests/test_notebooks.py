"""The notebooks in `notebooks/`: committed without outputs, Colab-ready, and executed end to end in small mode.

Small mode (`TRL_RANKING_SMALL=1`) swaps in a tiny random model, a tiny random reward model and a few rows of the
data shipped with the package, so that each notebook runs on a CPU in about a minute. The figures are written to
`outputs/<notebook>/*.png` under the directory the notebook runs in, and the trainers' TensorBoard event files (the
notebooks' `report_to`) under `outputs/<notebook>/<run>/runs/`.
"""

from __future__ import annotations

from pathlib import Path

import pytest


NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: pip install -e '.[notebooks]'")
    return nbformat.read(path, as_version=4)


def test_the_notebooks_exist():
    names = {path.name for path in NOTEBOOKS}
    assert "pro_qlora_hh_rlhf.ipynb" in names
    assert any(name.startswith("dove_") for name in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stripped_and_colab_ready(path):
    notebook = _read(path)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, "commit notebooks without outputs"
    assert "%pip install" in code[0].source  # the install cell comes first, with the kernel's own pip
    assert "torch.cuda.is_available()" in code[1].source  # then the GPU check
    assert notebook.metadata.get("accelerator") == "GPU"
    assert "TRL_RANKING_SMALL" in "".join(cell.source for cell in code)
    assert 'REPORT_TO = "tensorboard"' in "".join(cell.source for cell in code)  # a real tracker, offline
    assert 'report_to="none"' not in "".join(cell.source for cell in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_in_small_mode(path, tmp_path, monkeypatch):
    pytest.importorskip("nbclient", reason="nbclient is not installed: pip install -e '.[notebooks]'")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed: pip install -e '.[notebooks]'")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: pip install -e '.[notebooks]'")
    pytest.importorskip("peft")
    pytest.importorskip("bitsandbytes")
    pytest.importorskip("tensorboard", reason="tensorboard is not installed: pip install -e '.[notebooks]'")
    from jupyter_client.kernelspec import NoSuchKernel
    from nbclient import NotebookClient

    for name, value in {"TRL_RANKING_SMALL": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1",
                        "HF_DATASETS_OFFLINE": "1", "MPLBACKEND": "Agg"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    notebook = _read(path)
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    try:
        client.execute()
    except NoSuchKernel:
        pytest.skip("no 'python3' Jupyter kernel: pip install ipykernel")
    outputs = tmp_path / "outputs" / path.stem
    figures = {"pro_qlora_hh_rlhf": ["training_curves.png", "rewards.png"]}.get(
        path.stem, ["training_curves.png", "comparison.png"]
    )
    assert all((outputs / figure).stat().st_size > 0 for figure in figures)
    assert list(outputs.glob("*/runs/*/events.out.tfevents.*"))  # what `report_to="tensorboard"` wrote
    errors = [output for cell in notebook.cells for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors
