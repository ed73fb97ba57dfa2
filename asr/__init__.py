"""tingxie's recognition core: features, Conformer-CTC model, decoding, training."""

import os

# OpenMP threads that spin while waiting for work steal the cores that the event loop,
# data loading and other processes need; measured here, spinning made 2-thread batch
# transcription 3.7x slower on a busy 2-core machine. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .checkpoint import ModelDirError, load_model_dir, save_model_dir
from .config import ChunkConfig, DecodingConfig, EndpointConfig, FeatureConfig, ModelConfig
from .recognizer import Recognizer, Result, Stream, Token

__all__ = [
    "Recognizer",
    "Stream",
    "Result",
    "Token",
    "ModelDirError",
    "load_model_dir",
    "save_model_dir",
    "ChunkConfig",
    "DecodingConfig",
    "EndpointConfig",
    "FeatureConfig",
    "ModelConfig",
]
