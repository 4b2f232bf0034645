"""A small text-image model trained by ddpm_ms (CLIP's contrastive recipe at toy scale, not CLIP) and
text guidance with it or any other image/text encoder pair."""
from ddpm_ms.textimage.guidance import SphericalDistanceLoss, TextGuidance
from ddpm_ms.textimage.model import TextImageConfig, TextImageModel, load_text_image_model

__all__ = ["SphericalDistanceLoss", "TextGuidance", "TextImageConfig", "TextImageModel", "load_text_image_model"]
