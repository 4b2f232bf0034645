"""Score a class-conditional model guided by an earlier checkpoint of itself (autoguidance).

Karras et al. 2024 ("Guiding a Diffusion Model with a Bad Version of Itself") replace the
unconditional model of classifier-free guidance by a weaker model of the same task:
output = bad + w (good - bad), both given the class. Their weaker model is smaller and trained
for a fraction of the time; the cheapest stand-in here is an early checkpoint of the same run.
This runs scripts/evaluate.py with the guided steps (w != 1, inside --guidance-interval) computed
that way; `--guide-null` gives the guiding checkpoint "no class", i.e. classifier-free guidance
whose unconditional half comes from the earlier checkpoint:

    python benchmarks/autoguidance.py --guide-ckpt RUN/checkpoints/step_0002000.ckpt \\
        -- --ckpt RUN/checkpoints/final.ckpt --num 2000 --guidance-scale 2 --guidance-interval 0,700

Everything after `--` goes to evaluate.py as it is. The printed record gains "guide" (the
checkpoint, its step and which label it was given); it is not appended to the run's eval.jsonl.
The results on the preset are in docs/experiments/guidance.md ("Guiding with an earlier checkpoint").
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guide-ckpt", type=Path, required=True, help="the guiding (weaker) checkpoint, same config")
    ap.add_argument("--guide-null", action="store_true", help='give the guiding checkpoint "no class" (CFG-like)')
    ap.add_argument("evaluate_args", nargs=argparse.REMAINDER, help="after --: evaluate.py's arguments")
    args = ap.parse_args(argv)
    rest = [a for a in args.evaluate_args if a != "--"]
    if "pynative" in rest or "--npz" in rest:
        ap.error("the guide enters through the compiled sampling loop: leave out --mode pynative and --npz")
    if not args.guide_ckpt.is_file():
        ap.error(f"--guide-ckpt {args.guide_ckpt}: no such checkpoint file")

    from mindspore import ops

    import ddpm_ms.sampling.loop as loop
    import ddpm_ms.training as training
    from ddpm_ms.training.checkpoint import load_model
    from evaluate_hook import evaluate_with_amended_record

    guide_info = {}

    def load_with_guide(run_dir, checkpoint=None, weights="auto"):
        good, cfg = load_model(run_dir, checkpoint, weights)
        if not good.num_classes:
            raise ValueError("autoguidance here needs a class-conditional model; this one is unconditional")
        guide, _ = load_model(run_dir, args.guide_ckpt, weights)  # a config mismatch fails here, by name
        good.guide = guide
        guide_info.update(checkpoint=str(args.guide_ckpt), step=guide.checkpoint_step,
                          weights=guide.loaded_weights, label="null" if args.guide_null else "class")
        return good, cfg

    plain_compiled = loop.compiled

    def compiled(model):
        forward_good = plain_compiled(model)
        if not hasattr(model, "guide"):
            return forward_good
        forward_guide = plain_compiled(model.guide)

        def forward(x, t, y):
            # The loop's guided call is forward(cat(x, x), t, cat(labels, null)); any other call has no null label.
            if not (y.asnumpy() == model.num_classes).any():
                return forward_good(x, t, y)
            n = x.shape[0] // 2
            guide_labels = y[n:] if args.guide_null else y[:n]
            return ops.cat((forward_good(x[:n], t[:n], y[:n]), forward_guide(x[n:], t[n:], guide_labels)))
        return forward

    loop.compiled = compiled  # sample() looks it up here at every call
    training.load_model = load_with_guide  # evaluate.run imports it from here
    return evaluate_with_amended_record(rest, lambda record: record.update(guide=guide_info))


if __name__ == "__main__":
    sys.exit(main())
