"""The web demo (scripts/demo.py): a Gradio app over a pipeline.

    offline_environment()                      # before gradio is first imported
    demo = Demo(DiffusionPipeline.from_pretrained(DEFAULT_PRETRAINED))
    demo.generate("Sneaker", "dpm++", 20)      # the page's one handler, without a browser
    app, url = launch(demo, port=0, block=False)

The page: pick a class (or none), the sampler and its steps, classifier-free guidance, a colour
and a text prompt to steer toward, the seed and the number of images, optionally a starting image
(image-to-image) and a region to repaint (inpainting); it shows the grid and the denoising GIF and
offers both for download. Fully offline: served on 127.0.0.1 by default, no share link, no
analytics, system fonts only. Gradio is an optional extra (`pip install -e .[demo]`): it is
imported only where the page is built and served, so the rest of the module works without it.
"""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import numpy as np

from ddpm_ms import viz
from ddpm_ms.registry import SAMPLERS
from ddpm_ms.sampling.loss_guidance import ColorGuidance
from ddpm_ms.textimage import TextGuidance, load_text_image_model

MASKS = ("none (image-to-image)", "left half", "right half", "top half", "bottom half", "centre", "border")
NO_CLASS = "none (unconditional)"
MAX_IMAGES = 16


def sampler_menu(pipe) -> list:
    """Every registered sampler, the pipeline's default first."""
    return [pipe.sampling.sampler] + [n for n in SAMPLERS if n != pipe.sampling.sampler]


def mask_for(preset: str, shape) -> np.ndarray | None:
    """A (1, H, W) mask (1: repaint) for one of MASKS, None for image-to-image."""
    _, h, w = shape
    m = np.zeros((1, h, w), np.float32)
    if preset == MASKS[0]:
        return None
    if preset == "left half":
        m[..., :w // 2] = 1
    elif preset == "right half":
        m[..., w // 2:] = 1
    elif preset == "top half":
        m[:, :h // 2] = 1
    elif preset == "bottom half":
        m[:, h // 2:] = 1
    elif preset == "centre":
        m[:, h // 4:h - h // 4, w // 4:w - w // 4] = 1
    elif preset == "border":
        m[:] = 1
        m[:, h // 4:h - h // 4, w // 4:w - w // 4] = 0
    else:
        raise ValueError(f"unknown mask {preset!r}; choose one of {', '.join(MASKS)}")
    return m


class Demo:
    """The app's state and its one handler, `generate`, callable without a browser (tests call it)."""

    def __init__(self, pipe, text_model_path=None, out_dir=None):
        self.pipe, self.text_model_path = pipe, text_model_path
        self.out_dir = Path(out_dir or tempfile.mkdtemp(prefix="ddpm_ms-demo-"))
        self._text_model = None
        self.calls = 0

    @property
    def class_choices(self) -> list[str]:
        return [NO_CLASS] + list(self.pipe.class_names) if self.pipe.num_classes else [NO_CLASS]

    def text_model(self):
        if self._text_model is None:
            self._text_model = load_text_image_model(self.text_model_path)
        return self._text_model

    def generate(self, class_name=NO_CLASS, sampler="dpm++", steps=20, cfg_scale=None, color="#ffffff",
                 color_scale=0.0, prompt="", prompt_scale=0.0, seed=0, num_images=8, image=None, strength=0.8,
                 mask=MASKS[0], progress=None):
        """Draw the images; returns (grid PNG path, GIF path, [both paths for download], a summary line)."""
        num_images, steps, seed = int(num_images), int(steps), int(seed)
        if not 1 <= num_images <= MAX_IMAGES:
            raise ValueError(f"number of images must be 1..{MAX_IMAGES}, got {num_images}")
        terms = []
        if color_scale and float(color_scale) > 0:
            terms.append(ColorGuidance(color, float(color_scale)))
        if prompt and prompt.strip() and prompt_scale and float(prompt_scale) > 0:
            terms.append(TextGuidance(prompt.strip(), self.text_model(), float(prompt_scale)))
        labels, guidance_scale = None, None
        if self.pipe.num_classes:
            labels = "none" if class_name in (None, NO_CLASS) else class_name
            if cfg_scale is not None:
                guidance_scale = float(cfg_scale)
        task, repaint = self.pipe, None
        if image is not None:
            repaint = mask_for(mask, self.pipe.image_shape)
            task = (self.pipe.img2img(image, float(strength)) if repaint is None
                    else self.pipe.inpaint(image, repaint, float(strength)))
        out = task(num_images, class_labels=labels, sampler=sampler, num_inference_steps=steps,
                   guidance_scale=guidance_scale, guidance=terms, seed=seed, return_trajectory=max(1, steps // 25),
                   progress=False)
        self.calls += 1
        stem = self.out_dir / f"ddpm_ms-{self.calls:04d}-seed{seed}"
        columns = min(num_images, 4)  # 8 images as 2 rows of 4: big enough to see beside the controls
        grid = viz.save_grid(out.images, stem.with_suffix(".png"), nrow=columns)
        gif = viz.save_denoising_gif(out.trajectory, stem.with_suffix(".gif"), fps=10, max_images=num_images,
                                     nrow=columns, show_x0=True)
        what = [f"{num_images} image(s)", f"{sampler} {steps} steps", f"seed {seed}"]
        what += [f"{t.name} x {t.scale:g}" for t in terms]
        if image is not None:
            what.append("inpainting" if repaint is not None else f"from your image at strength {strength}")
        return str(grid), str(gif), [str(grid), str(gif)], ", ".join(what)


def build_app(demo: Demo):
    """The Gradio Blocks of the page (built after GRADIO_ANALYTICS_ENABLED is set)."""
    import gradio as gr  # the optional extra, imported once offline_environment() has run

    pipe = demo.pipe
    with gr.Blocks(analytics_enabled=False, title="ddpm_ms demo") as app:
        gr.Markdown(f"## ddpm_ms: {pipe.dataset or 'a diffusion model'}  \n"
                    f"{pipe.model_config.arch} on {'x'.join(map(str, pipe.image_shape))} images, from `{pipe.source}`")
        with gr.Row():
            with gr.Column():
                class_name = gr.Dropdown(demo.class_choices, value=demo.class_choices[0], label="class",
                                         interactive=bool(pipe.num_classes), elem_id="class")
                with gr.Row():
                    sampler = gr.Dropdown(sampler_menu(pipe), value=pipe.sampling.sampler, label="sampler", elem_id="sampler")
                    steps = gr.Slider(1, 100, value=pipe.sampling.steps or 20, step=1, label="steps", elem_id="steps")
                cfg = gr.Slider(0, 8, value=pipe.sampling.guidance_scale, step=0.1, label="class guidance (CFG) scale",
                                interactive=bool(pipe.num_classes), elem_id="cfg")
                with gr.Row():
                    color = gr.ColorPicker("#ffffff", label="colour", elem_id="color")
                    color_scale = gr.Slider(0, 60, value=0, step=1, label="colour scale (0: off)", elem_id="color_scale")
                with gr.Row():
                    prompt = gr.Textbox(label="text prompt", placeholder="a sneaker", elem_id="prompt")
                    prompt_scale = gr.Slider(0, 100, value=0, step=1, label="prompt scale (0: off)",
                                             elem_id="prompt_scale")
                with gr.Row():
                    seed = gr.Number(0, precision=0, minimum=0, label="seed", elem_id="seed")
                    num = gr.Slider(1, MAX_IMAGES, value=8, step=1, label="images", elem_id="num")
                with gr.Accordion("start from your image (image-to-image, inpainting)", open=False):
                    image = gr.Image(type="pil", label="your image", elem_id="image")
                    strength = gr.Slider(0, 1, value=0.8, step=0.05, label="strength (0 keeps it, 1 ignores it)",
                                         info="inpainting: 1 repaints the region freely",
                                         elem_id="strength")
                    mask = gr.Dropdown(list(MASKS), value=MASKS[0], label="repaint", elem_id="mask")
                button = gr.Button("generate", variant="primary", elem_id="generate")
            with gr.Column():
                grid = gr.Image(label="samples", type="filepath", elem_id="grid", interactive=False)
                gif = gr.Image(label="denoising (x_t and the predicted x0)", type="filepath", elem_id="gif",
                               interactive=False)
                files = gr.File(label="download", file_count="multiple", elem_id="files")
                info = gr.Markdown(elem_id="info")
        button.click(demo.generate, [class_name, sampler, steps, cfg, color, color_scale, prompt, prompt_scale, seed,
                                     num, image, strength, mask], [grid, gif, files, info], api_name="generate")
    return app


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_taken(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def launch(demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True):
    """Serve the app; returns (app, url). port 0 picks a free one; a taken port is a PortTaken error."""
    import gradio as gr  # the optional extra, imported once offline_environment() has run

    port = port or free_port(host)
    if port_is_taken(host, port):
        raise PortTaken(f"port {port} on {host} is in use (another demo?): pass --port N for another, or --port 0 "
                        "for any free one")
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # no web fonts: nothing leaves the machine
    app = build_app(demo)
    app.queue(default_concurrency_limit=1)  # one generation at a time: the CPU is shared
    app.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=not block, quiet=True,
               show_error=True, ssr_mode=False, theme=theme, allowed_paths=[str(demo.out_dir)], mcp_server=False)
    return app, f"http://{host}:{port}/"


class PortTaken(OSError):
    """The port is in use."""


def offline_environment() -> None:
    """Gradio's analytics and update check off, Hugging Face hub offline: set before gradio is imported."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class GradioMissing(RuntimeError):
    """Gradio, the demo's optional extra, is not installed."""


def require_gradio() -> None:
    """Set the offline environment, then check that Gradio can be imported (GradioMissing if not)."""
    offline_environment()
    try:
        import gradio  # noqa: F401 -- the optional extra: its absence is one clear error, not an ImportError
    except ImportError:
        raise GradioMissing("the demo needs Gradio: pip install -e .[demo]") from None
