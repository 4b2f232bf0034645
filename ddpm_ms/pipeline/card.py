"""The model card: README.md of a pipeline directory, written from what is known of the model."""
from __future__ import annotations


def _guidance(sampling) -> str:
    if sampling.guidance_scale == 1 and not sampling.guidance_rescale:
        return "no guidance"
    text = f"classifier-free guidance w = {sampling.guidance_scale:g}"
    if sampling.guidance_interval:
        text += f" at {sampling.guidance_interval[0]} <= t <= {sampling.guidance_interval[1]}"
    return text + (f", rescaled {sampling.guidance_rescale:g}" if sampling.guidance_rescale else "")


def render_card(info: dict) -> str:
    """Markdown from `info`: DiffusionPipeline.card_info() plus, when known, "evaluation" (an
    evaluate.py record: fid, fid_floor, num, sampler, steps, machine), "command" (the training
    command) and "machine" (where it trained)."""
    dataset = info.get("dataset") or "unknown data"
    sampling, diffusion = info["sampling"], info["diffusion"]
    c, h, w = info["image_shape"]
    kind = f"class-conditional on {info['num_classes']} classes" if info["num_classes"] else "unconditional"
    lines = [f"# ddpm_ms {info.get('arch', 'unet')} on {dataset}", "",
             f"A denoising diffusion model trained with ddpm_ms ({info.get('preset') or 'custom'} "
             f"preset): {c}-channel {h}x{w} images, {kind}, {info['parameters']:,} parameters, "
             f"{diffusion.timesteps} diffusion steps ({diffusion.beta_schedule} schedule, predicts {diffusion.objective}).",
             "", "| | |", "| --- | --- |",
             f"| data set | {dataset} |",
             f"| training steps | {info['training_steps'] if info.get('training_steps') is not None else 'unknown'} |",
             f"| weights | {info.get('weights') or 'unknown'} |"]
    if info.get("num_classes"):
        lines.append(f"| classes | {', '.join(f'{i} {n}' for i, n in enumerate(info['class_names']))} |")
    lines.append(f"| default sampler | {sampling.sampler}, {sampling.steps or 'its default'} steps, {_guidance(sampling)} |")
    ev = info.get("evaluation")
    if ev:
        floor = (f" against a floor of {ev['fid_floor']:g} (real train images against the same test set, same count)"
                 if ev.get("fid_floor") is not None else " (floor not measured)")
        where = f", on {ev['machine']}" if ev.get("machine") else ""
        lines.append(f"| FID | {ev['fid']:g} at {ev['num']:,} images ({ev['sampler']}, {ev['steps']} steps){floor}; "
                     f"measured in the features of ddpm_ms's {dataset} classifier, not Inception's{where} |")
        if ev.get("class_accuracy") is not None:
            lines.append(f"| class accuracy | {100 * ev['class_accuracy']:.1f}% of samples recognised as the class asked for |")
    else:
        lines.append("| FID | not measured (scripts/evaluate.py --model DIR measures it) |")
    if info.get("machine"):
        lines.append(f"| trained on | {info['machine']} |")
    if info.get("command"):
        lines += ["", "Trained with:", "", f"    {info['command']}"]
    lines += ["", "Sample from it:", "", "    python scripts/sample.py --model DIR", "",
              "    from ddpm_ms.pipeline import DiffusionPipeline",
              "    images = DiffusionPipeline.from_pretrained(DIR)(num_images=16, seed=0).images", ""]
    return "\n".join(lines)
