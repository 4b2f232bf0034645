"""Loss guidance on the shipped Fashion-MNIST pipeline, measured (docs/experiments/loss_guidance.md).

    python research/steering_study.py colour --out docs/experiments/runs/steering   # ~25 min on 2 cores
    python research/steering_study.py text --out docs/experiments/runs/steering --scale 40

colour: 2,000 images at each colour scale (default 0, 5, 20, 40) toward the course's colour
(0.1, 0.9, 0.5), whose brightness is 0.615 in [0, 1]: their mean brightness, FID, precision, recall,
and a figure of the first images of each scale side by side.
text: the pipeline drawn as its unconditional model (class "none"), 200 images per class prompt
("a photo of a <class>"), unguided and guided: the share the evaluation classifier assigns to the
prompted class, and the FID of the 2,000 guided images against that of 2,000 unguided ones.
Every figure is written to OUT/<study>.json with the command line, machine and date.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddpm_ms.device import machine, select_device  # noqa: E402
from ddpm_ms.metrics.evaluation import FeatureExtractor, Reference, fid_floor, score_images  # noqa: E402
from ddpm_ms.pipeline import DiffusionPipeline  # noqa: E402
from ddpm_ms.sampling.loss_guidance import LUMA, ColorGuidance, parse_color  # noqa: E402


def colour(args, pipe, extractor, reference) -> dict:
    from ddpm_ms import viz

    rgb = parse_color(args.rgb)
    target = float(np.array(LUMA) @ np.array(rgb))
    rows, panels = [], {}
    for scale in args.scales:
        tic = time.perf_counter()
        images = pipe(args.num, seed=args.seed, progress=not args.no_progress,
                      guidance=[ColorGuidance(rgb, scale, through_model=args.through_model)] if scale else None).images
        seconds = time.perf_counter() - tic
        scores = score_images(images, extractor, reference)
        brightness = float((images.mean() + 1) / 2)
        rows.append({"scale": scale, "brightness": round(brightness, 4), "fid": scores["fid"],
                     "precision": scores["precision"], "recall": scores["recall"], "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
        panels[f"scale {scale:g}: brightness {brightness:.3f}"] = images[:40]
    figure = viz.save_comparison(panels, Path(args.out) / "colour_scales.png", columns=len(panels))
    return {"target_rgb": rgb, "target_brightness": round(target, 4), "rows": rows, "figure": str(figure)}


def text(args, pipe, extractor, reference) -> dict:
    from ddpm_ms import viz
    from ddpm_ms.textimage import TextGuidance, load_text_image_model
    from ddpm_ms.textimage.vocab import prompt_for

    encoders = load_text_image_model(args.text_model)
    n = args.per_prompt
    tic = time.perf_counter()
    plain = pipe(10 * n, class_labels="none", seed=args.seed, progress=not args.no_progress).images
    plain_seconds = time.perf_counter() - tic
    plain_class = extractor(plain)[1].argmax(axis=1)
    rows, guided_all, panels = [], [], {}
    tic = time.perf_counter()
    for c, name in enumerate(pipe.class_names):
        prompt = prompt_for("fashion_mnist", c)
        images = pipe(n, class_labels="none", seed=args.seed + 1 + c, progress=not args.no_progress,
                      guidance=[TextGuidance(prompt, encoders, args.scale, through_model=not args.through_x0)]).images
        share = float((extractor(images)[1].argmax(axis=1) == c).mean())
        rows.append({"class": name, "prompt": prompt, "unguided_share": round(float((plain_class == c).mean()), 4),
                     "guided_share": round(share, 4)})
        print(json.dumps(rows[-1]), flush=True)
        guided_all.append(images)
        panels[prompt] = images[:10]
    guided_seconds = time.perf_counter() - tic
    guided = np.concatenate(guided_all)
    plain_scores, guided_scores = score_images(plain, extractor, reference), score_images(guided, extractor, reference)
    figure = viz.save_comparison({"unguided (class none)": plain[:100],
                                  f"guided by each class prompt, scale {args.scale:g} (a row per prompt)":
                                      np.concatenate([p for p in panels.values()])},
                                 Path(args.out) / "text_prompts.png", columns=2)
    return {"scale": args.scale, "through_model": not args.through_x0, "per_prompt": n, "rows": rows,
            "mean_guided_share": round(float(np.mean([r["guided_share"] for r in rows])), 4),
            "mean_unguided_share": round(float(np.mean([r["unguided_share"] for r in rows])), 4),
            "unguided": {k: plain_scores[k] for k in ("fid", "precision", "recall")},
            "guided": {k: guided_scores[k] for k in ("fid", "precision", "recall")},
            "seconds": {"unguided": round(plain_seconds, 1), "guided": round(guided_seconds, 1)},
            "figure": str(figure)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=["colour", "text"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="fashion_mnist")
    p.add_argument("--num", type=int, default=2000, help="colour: images per scale")
    p.add_argument("--scales", type=float, nargs="+", default=[0, 5, 20, 40])
    p.add_argument("--rgb", default="0.1,0.9,0.5", help="colour: the target (the course's green)")
    p.add_argument("--per-prompt", type=int, default=200, help="text: images per class prompt")
    p.add_argument("--scale", type=float, default=40.0, help="text: the prompt scale")
    p.add_argument("--text-model", type=Path)
    p.add_argument("--through-model", action="store_true", help="colour: through the denoiser (default: the x0 formula)")
    p.add_argument("--through-x0", action="store_true", help="text: through the x0 formula (default: the denoiser)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    device = select_device("auto")
    pipe = DiffusionPipeline.from_pretrained(args.model)
    extractor = FeatureExtractor("fashion_mnist")
    reference = Reference.load("fashion_mnist", extractor)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    result = (colour if args.study == "colour" else text)(args, pipe, extractor, reference)
    num = args.num if args.study == "colour" else 10 * args.per_prompt
    result.update(fid_floor=fid_floor(extractor, reference, num), model=str(pipe.source), device=device,
                  machine=machine(), date=started, command="python research/steering_study.py " + " ".join(
                      sys.argv[1:] if argv is None else argv))
    (args.out / f"{args.study}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
