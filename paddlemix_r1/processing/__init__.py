"""Image processor, tokenizer + chat template, and the Processor that builds model batches."""

from paddlemix_r1.processing.image_processor import (
    ImageBatch,
    ImageProcessor,
    load_image,
    smart_resize,
)
from paddlemix_r1.processing.processor import Processor
from paddlemix_r1.processing.tokenizer import Tokenizer

__all__ = ["ImageBatch", "ImageProcessor", "Processor", "Tokenizer", "load_image", "smart_resize"]
