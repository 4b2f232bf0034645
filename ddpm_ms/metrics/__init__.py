"""Quality metrics in a classifier's feature space: FID and friends."""
from ddpm_ms.metrics.fid import feature_statistics, frechet_distance, trace_sqrt_product

__all__ = ["feature_statistics", "frechet_distance", "trace_sqrt_product"]
