"""The rollout's KV caches, passed to the model's forward as its ``cache`` argument
(``models.decoder.PastKeyValues``): preallocated once, written at explicit positions.

``KVCache`` holds every row's keys/values (the prefill writes the prompts); ``GroupedKVCache`` continues
a prefill's cache for G completions per prompt with the prompt's keys/values kept once.
"""

from __future__ import annotations

import paddle

from paddlemix_r1 import ops
from paddlemix_r1.ops.attention import NEG_INF


class KVCache:
    """Preallocated keys/values for every layer, written at explicit positions.

    k[layer], v[layer]: (n_kv_heads, B, max_len, head_dim), head-first so attention reads them
    without a transpose. ``length`` is how many positions hold data; a forward with the cache
    writes positions [length, length + L) and advances it.
    """

    def __init__(self, num_layers: int, batch: int, max_len: int, n_kv: int, head_dim: int, dtype: str):
        self.k = [paddle.zeros([n_kv, batch, max_len, head_dim], dtype) for _ in range(num_layers)]
        self.v = [paddle.zeros([n_kv, batch, max_len, head_dim], dtype) for _ in range(num_layers)]
        self.length = 0
        self.max_len = max_len

    @classmethod
    def for_model(cls, model, batch: int, max_len: int) -> KVCache:
        """A cache shaped for ``model``'s decoder (layers, kv heads, head dim, dtype of its embeddings)."""
        t = model.config.text
        dtype = str(model.model.embed_tokens.weight.dtype).replace("paddle.", "")
        return cls(t.num_hidden_layers, batch, max_len, t.num_key_value_heads, t.head_dim, dtype)

    @property
    def batch(self) -> int:
        return int(self.k[0].shape[1])

    def write(self, layer: int, k: paddle.Tensor, v: paddle.Tensor, kv_len: int | None = None
              ) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Store k, v (nkv, B, L, hd) at [length, length+L); return the first ``kv_len`` positions
        (default length+L) of keys/values, (nkv, B, kv_len, hd). ``kv_len == max_len`` returns the
        whole buffers without a copy: decode steps attend over them with the unused tail masked."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: need {end} positions, allocated {self.max_len}")
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        kv_len = end if kv_len is None else kv_len
        if kv_len == self.max_len:
            return self.k[layer], self.v[layer]
        return self.k[layer][:, :, :kv_len], self.v[layer][:, :, :kv_len]

    def step_mask(self, attention_mask: paddle.Tensor, q_len: int) -> paddle.Tensor:
        """Additive mask (B, 1, q_len, K) for this forward's queries over K = attention_mask's length."""
        return ops.causal_padding_mask(attention_mask, q_len)

    def attend(self, layer: int, q, k, v, mask, scale: float) -> paddle.Tensor:
        """Store this forward's k, v (nkv, B, L, hd) and attend q (B, L, nh, hd) over the cache."""
        k, v = self.write(layer, k, v, kv_len=mask.shape[-1])  # (nkv, B, K, hd), K = mask's key length
        return ops.attention(q, k, v, mask, scale)

    def advance(self, n: int) -> None:
        self.length += n


class GroupedKVCache:
    """Decode-time cache for N = B*G rows in groups of G that continue one prompt each (group prefix
    sharing): the prompt's keys/values are kept ONCE per prompt, as the prefill wrote them, and only
    the generated tokens' keys/values are stored per row. A decode step reads the prompt cache once per
    prompt instead of G times (``ops.grouped_decode_attention``); on CPU, the expanded cache's memory
    traffic slowed every op of the step.

    Every row writes its t-th generated token at the same slot t (the rollout's loop), so the key mask
    is the prompt's padding plus "slot already written"; it is built here, once per step.
    """

    def __init__(self, prefill: KVCache, prompt_mask: paddle.Tensor, group_size: int, max_new_tokens: int,
                 num_heads: int):
        self.k_prompt, self.v_prompt = prefill.k, prefill.v  # per layer (nkv, B, L, hd)
        nkv, b, length, hd = prefill.k[0].shape
        if prefill.length != length:
            raise ValueError(f"prefill cache holds {prefill.length} of {length} positions; allocate it at the prompt length")
        n, t = b * group_size, max_new_tokens
        dtype = prefill.k[0].dtype
        self.k_new = [paddle.zeros([nkv, n, t, hd], dtype) for _ in prefill.k]
        self.v_new = [paddle.zeros([nkv, n, t, hd], dtype) for _ in prefill.v]
        rows_mask = paddle.repeat_interleave(prompt_mask, group_size, axis=0)  # (N, L) 1 token, 0 padding
        self._prompt_add = ops.causal_padding_mask(rows_mask, 1).reshape([n, 1, length])  # (N, 1, L): 0 or NEG_INF
        self._new_add = paddle.full([n, 1, t], NEG_INF, "float32")  # slots not yet written
        self.prompt_length, self.length, self.slots = length, length, t
        # each step's mask is expanded once to the scores' (nkv, N, g, K), not in every layer
        self._score_shape = [nkv, n, num_heads // nkv, length + t]

    def step_mask(self, attention_mask: paddle.Tensor | None, q_len: int) -> paddle.Tensor:
        """(nkv, N, g, L + T) additive over [prompt | generated slots] for the token written at slot
        length - L. ``attention_mask`` is not needed (see the class docstring)."""
        if q_len != 1:
            raise ValueError(f"GroupedKVCache decodes one token per row at a time, got {q_len}")
        slot = self.length - self.prompt_length
        if slot >= self.slots:
            raise ValueError(f"KV cache overflow: slot {slot}, allocated {self.slots}")
        self._new_add[:, :, slot] = 0.0
        mask = paddle.concat([self._prompt_add, self._new_add], axis=-1)  # (N, 1, K)
        return mask.unsqueeze(0).expand(self._score_shape)

    def attend(self, layer: int, q, k, v, mask, scale: float) -> paddle.Tensor:
        """k, v (nkv, N, 1, hd) of this step's tokens -> their slot; q (N, 1, nh, hd) attends over the
        prompt (shared) and the generated slots (own)."""
        slot = self.length - self.prompt_length
        self.k_new[layer][:, :, slot:slot + 1] = k
        self.v_new[layer][:, :, slot:slot + 1] = v
        return ops.grouped_decode_attention(q, self.k_prompt[layer], self.v_prompt[layer], self.k_new[layer],
                                            self.v_new[layer], mask, scale)

    def advance(self, n: int) -> None:
        self.length += n
