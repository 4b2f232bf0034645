"""Quality metrics in a classifier's feature space: FID and friends."""
from ddpm_ms.metrics.fid import feature_statistics, frechet_distance, trace_sqrt_product
from ddpm_ms.metrics.scores import class_histogram, inception_score, knn_radii, precision_recall

__all__ = ["class_histogram", "feature_statistics", "frechet_distance", "inception_score", "knn_radii",
           "precision_recall", "trace_sqrt_product"]
