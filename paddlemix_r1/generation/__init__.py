"""Rollout engine: batched KV-cache generation with group prefix sharing.

Layout: ``engine.py`` (``prefill`` -> ``decode_one_token`` -> ``sample`` in a loop, ``generate``),
``kv_cache.py`` (``KVCache``, ``GroupedKVCache``), ``packing.py`` (the decoder's packed copy for CPU
decoding), ``sampling.py`` (temperature, top-k, top-p, the draw), ``text.py`` (chat generation).

Design: the engine owns its cache and its decode-time specialisations; the model stays a model. As in
nanochat's engine, the model's forward takes an optional ``cache`` argument (any object with the three
methods of ``models.decoder.PastKeyValues``) and knows nothing of how the rollout lays keys and values
out. gpt-fast instead packs q/k/v once at load and keeps one projection path in the model; that does not
fit here: our packing folds the RMSNorm weights, the attention scale and rotate_half into the packed
GEMMs, which is right for sampling but not for training (the policy trains the unfolded parameters, and
the HF export and LoRA read the published layout). So packing builds a separate ``PackedDecoder`` from
the weights for each ``generate`` call: the model's modules never change mode, a gradient pass can only
ever run the model's own layers, and a packed copy cannot outlive the weights it was read from.
"""

from paddlemix_r1.generation.engine import GenerationOutput, decode_one_token, generate, prefill
from paddlemix_r1.generation.kv_cache import GroupedKVCache, KVCache
from paddlemix_r1.generation.packing import PackedDecoder, pack_decoder
from paddlemix_r1.generation.sampling import sample, top_k_filter, top_p_filter

__all__ = ["GenerationOutput", "GroupedKVCache", "KVCache", "PackedDecoder", "decode_one_token", "generate",
           "pack_decoder", "prefill", "sample", "top_k_filter", "top_p_filter"]
