"""tingxie's recognition core: features, Conformer-CTC model, decoding, training."""

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
