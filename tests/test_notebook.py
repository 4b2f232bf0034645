"""The tutorial notebook: committed without outputs, and run top to bottom in a fresh kernel."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with requirements-dev.txt")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "ddpm_tutorial.ipynb"


def load_notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_committed_notebook_is_valid_and_has_no_outputs():
    nb = load_notebook()
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"cells {dirty} of {NOTEBOOK.name} hold outputs; clear them before committing "
                       f"(jupyter nbconvert --clear-output --inplace {NOTEBOOK})")


def test_notebook_has_a_quick_parameter_cell_and_uses_the_library():
    nb = load_notebook()
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    assert "QUICK" in first and "DDPM_MS_TUTORIAL_QUICK" in first, "the first code cell sets QUICK from the environment"
    assert "parameters" in nb.cells[[c.cell_type for c in nb.cells].index("code")].metadata.get("tags", [])
    source = "\n".join(code)
    # The notebook builds nothing of its own: no Cell subclasses, the model and samplers come from ddpm_ms.
    assert "class " not in source and "nn.Cell" not in source
    for piece in ("idx_dataset", "NoiseSchedule", "build_model", "GaussianDiffusion", "make_train_step", "DiffusionPipeline",
                  "save_denoising_gif", "plot_schedules", "plot_forward_process"):
        assert piece in source, f"the tutorial no longer uses {piece}"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Executes every cell in a fresh kernel with QUICK = True; any error fails the test."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient comes with requirements-dev.txt")
    pytest.importorskip("ipykernel", reason="ipykernel comes with requirements-dev.txt")
    out = tmp_path / "outputs"
    monkeypatch.setenv("DDPM_MS_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("DDPM_MS_TUTORIAL_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel imports the ddpm_ms of this checkout, installed or not.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = load_notebook()
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:  # the executed copy, with every output, for a look after a failure
        nbformat.write(nb, tmp_path / "executed.ipynb")

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    gifs = [o for o in outputs if o.output_type == "display_data" and "image/gif" in o.get("data", {})]
    # batch grid, 2 forward processes, schedules, embedding, losses, live loss, samplers
    assert len(images) >= 8, f"expected the tutorial's figures, got {len(images)} PNG outputs"
    assert len(gifs) == 1, "the denoising GIF is shown inline"
    for name in ("forward_linear.png", "forward_cosine.png", "schedules.png", "denoising.gif"):
        assert (out / name).stat().st_size > 1000, f"{name} was not written"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "QUICK = True" in text
    # q_sample, the time embedding, the loss and the sampling loop, each checked against the library
    assert text.count("matches") == 4, text
