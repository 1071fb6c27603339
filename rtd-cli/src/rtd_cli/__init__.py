"""RTD: post-hoc text-encoder fine-tuning for zero-shot composed image retrieval
(Byun et al., ICCV 2025)."""

__version__ = "0.1.0"
