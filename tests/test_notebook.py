"""The tutorial notebooks (the U-Net one and the DiT one): committed without outputs, and run top to
bottom in a fresh kernel."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat comes with requirements-dev.txt")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "ddpm_tutorial.ipynb"
DIT_NOTEBOOK = REPO / "notebooks" / "dit_tutorial.ipynb"


def load_notebook(path=NOTEBOOK):
    return nbformat.read(path, as_version=4)


@pytest.mark.parametrize("path", [NOTEBOOK, DIT_NOTEBOOK], ids=lambda p: p.stem)
def test_committed_notebook_is_valid_and_has_no_outputs(path):
    nb = load_notebook(path)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"cells {dirty} of {path.name} hold outputs; clear them before committing "
                       f"(jupyter nbconvert --clear-output --inplace {path})")
    first_code = nb.cells[[c.cell_type for c in nb.cells].index("code")]
    assert "QUICK" in first_code.source and "DDPM_MS_TUTORIAL_QUICK" in first_code.source
    assert "parameters" in first_code.metadata.get("tags", []), "the first code cell is tagged as parameters"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "class " not in code and "nn.Cell" not in code, \
        "the notebook builds nothing of its own: the model and samplers come from ddpm_ms"


def test_the_tutorials_use_the_library():
    source = "\n".join(c.source for c in load_notebook().cells if c.cell_type == "code")
    for piece in ("idx_dataset", "NoiseSchedule", "build_model", "GaussianDiffusion", "make_train_step", "DiffusionPipeline",
                  "save_denoising_gif", "plot_schedules", "plot_forward_process"):
        assert piece in source, f"the tutorial no longer uses {piece}"
    source = "\n".join(c.source for c in load_notebook(DIT_NOTEBOOK).cells if c.cell_type == "code")
    for piece in ("sincos_position_embedding", "build_model", "adaLN_modulation", "make_train_step", "DiffusionPipeline"):
        assert piece in source, f"the DiT tutorial no longer uses {piece}"


def execute(path, tmp_path, monkeypatch):
    """Runs every cell of the notebook at `path` in a fresh kernel with QUICK = True and returns the
    executed notebook and its output folder."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient comes with requirements-dev.txt")
    pytest.importorskip("ipykernel", reason="ipykernel comes with requirements-dev.txt")
    out = tmp_path / "outputs"
    monkeypatch.setenv("DDPM_MS_TUTORIAL_QUICK", "1")
    monkeypatch.setenv("DDPM_MS_TUTORIAL_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # The kernel imports the ddpm_ms of this checkout, installed or not.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    nb = load_notebook(path)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:  # the executed copy, with every output, for a look after a failure
        nbformat.write(nb, tmp_path / "executed.ipynb")
    return nb, out


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """Executes every cell in a fresh kernel with QUICK = True; any error fails the test."""
    nb, out = execute(NOTEBOOK, tmp_path, monkeypatch)
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


@pytest.mark.slow
def test_dit_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    """The DiT tutorial in quick mode: the patch grid, the adaLN-Zero identity (exactly 0 for an
    untrained block, not for a disturbed one), a loss that falls, samples through the pipeline."""
    nb, out = execute(DIT_NOTEBOOK, tmp_path, monkeypatch)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"expected the patch grid, the loss and the samples, got {len(images)} PNG outputs"
    for name in ("dit_patches.png", "dit_samples.png"):
        assert (out / name).stat().st_size > 1000, f"{name} was not written"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "untrained block: max |block(x) - x| = 0.0" in text
    assert "untrained model's prediction: max |eps| = 0.0" in text
    assert "random regressor: max |block(x) - x| = 0.0" not in text
