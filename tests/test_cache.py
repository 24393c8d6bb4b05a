"""The embedding cache: keys, byte-bounded LRU, disk mirror, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from qpsam.engines.cache import CacheKey, Embedding, EmbeddingCache, image_hash

torch = pytest.importorskip("torch")


def _emb(n_floats: int, value: float = 0.0) -> Embedding:
    return Embedding({"features": torch.full((n_floats,), value)}, {"original_size": (4, 5)})


def test_image_hash_depends_on_pixels_shape_and_dtype():
    a = np.zeros((4, 6, 3), np.uint8)
    assert image_hash(a) == image_hash(a.copy())
    b = a.copy()
    b[0, 0, 0] = 1
    assert image_hash(a) != image_hash(b)
    assert image_hash(a) != image_hash(a.reshape(6, 4, 3))
    assert image_hash(a) != image_hash(a.astype(np.uint16))
    assert image_hash(a[:, ::2]) == image_hash(np.ascontiguousarray(a[:, ::2]))


def test_lru_is_bounded_in_bytes_and_keeps_recent_entries():
    cache = EmbeddingCache(max_bytes=3 * 4000)
    keys = [CacheKey("vit_t", "w", str(i)) for i in range(4)]
    for key in keys[:3]:
        cache.put(key, _emb(1000))
    assert cache.stats().nbytes == 12000 and len(cache) == 3
    assert cache.get(keys[0]) is not None  # touch: keys[1] is now the oldest
    cache.put(keys[3], _emb(1000))
    assert keys[1] not in cache and keys[0] in cache and keys[3] in cache
    assert cache.stats().nbytes <= cache.max_bytes
    cache.put(CacheKey("vit_t", "w", "huge"), _emb(10_000))  # larger than the whole cache: not kept
    assert CacheKey("vit_t", "w", "huge") not in cache and len(cache) == 3
    assert cache.get(CacheKey("vit_b", "w", "0")) is None  # another model, same image: a miss
    stats = cache.stats()
    assert (stats.hits, stats.misses) == (1, 1)


def test_disk_mirror_survives_a_new_cache_and_ignores_damaged_files(tmp_path):
    key = CacheKey("sam2_t", "abc" * 20, "img")
    nested = Embedding({"image_embed": torch.arange(6.0), "high_res_feats": [torch.ones(2), torch.zeros(3)]},
                       {"orig_hw": (3, 4)})
    EmbeddingCache(directory=tmp_path).put(key, nested)
    fresh = EmbeddingCache(directory=tmp_path)
    got = fresh.get(key)
    assert got is not None and fresh.stats().disk_hits == 1
    assert torch.equal(got.tensors["image_embed"], torch.arange(6.0))
    assert [t.numel() for t in got.tensors["high_res_feats"]] == [2, 3] and tuple(got.meta["orig_hw"]) == (3, 4)
    other = CacheKey("sam2_t", "abc" * 20, "other")
    (tmp_path / other.filename()).write_bytes(b"not a torch file")
    assert EmbeddingCache(directory=tmp_path).get(other) is None
    assert not (tmp_path / other.filename()).exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_disk_mirror_is_bounded(tmp_path):
    cache = EmbeddingCache(directory=tmp_path, disk_max_bytes=10_000)
    for i in range(6):
        cache.put(CacheKey("vit_t", "w", str(i)), _emb(1000))  # ~4 KB each on disk
    assert sum(p.stat().st_size for p in tmp_path.glob("*.pt")) <= 10_000


def test_threads_share_one_cache_consistently():
    cache = EmbeddingCache(max_bytes=50 * 400)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(300):
                i = int(rng.integers(0, 80))
                key = CacheKey("vit_t", "w", str(i))
                got = cache.get(key)
                if got is None:
                    cache.put(key, _emb(100, float(i)))
                else:
                    assert float(got.tensors["features"][0]) == float(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    stats = cache.stats()
    assert stats.nbytes == 400 * stats.entries <= cache.max_bytes
    assert stats.hits + stats.misses == 6 * 300
