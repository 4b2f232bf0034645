"""Inference: a trained model, its schedule and its sampling defaults as one object that loads,
samples and saves (`DiffusionPipeline`, shaped like diffusers' pipelines)."""
from ddpm_ms.pipeline.directory import FORMAT_VERSION, PipelineFileError
from ddpm_ms.pipeline.diffusion_pipeline import DEFAULT_PRETRAINED, DiffusionPipeline, PipelineOutput, shipped_pipelines

__all__ = ["DEFAULT_PRETRAINED", "DiffusionPipeline", "FORMAT_VERSION", "PipelineFileError", "PipelineOutput",
           "shipped_pipelines"]
