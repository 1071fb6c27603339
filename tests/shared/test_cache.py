"""Content-keyed feature cache: a changed input never reuses a stale entry."""

import torch

from labshared import cache


def test_cache_key_is_order_independent_and_input_sensitive():
    a = cache.cache_key({"model": "ViT-B-32", "split": "val"})
    assert a == cache.cache_key({"split": "val", "model": "ViT-B-32"})
    assert a != cache.cache_key({"model": "ViT-B-32", "split": "test"})


def test_cached_tensors_hit_miss_and_bypass(tmp_path):
    calls = []

    def compute(v):
        def f():
            calls.append(v)
            return {"feats": torch.full((2, 3), float(v))}

        return f

    spec = {"model": "m", "split": "val"}
    first = cache.cached_tensors("g", spec, compute(1), root=tmp_path)
    again = cache.cached_tensors("g", spec, compute(99), root=tmp_path)
    assert calls == [1] and torch.equal(first["feats"], again["feats"])
    changed = cache.cached_tensors("g", {**spec, "split": "test"}, compute(2), root=tmp_path)
    assert calls == [1, 2] and changed["feats"][0, 0] == 2.0
    bypass = cache.cached_tensors("g", spec, compute(3), root=tmp_path, enabled=False)
    assert calls == [1, 2, 3] and bypass["feats"][0, 0] == 3.0
    sidecars = sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(sidecars) == 2


def test_file_fingerprint_changes_when_file_rewritten(tmp_path):
    p = tmp_path / "f.txt"
    p.write_text("a")
    before = cache.file_fingerprint(p)
    p.write_text("ab")
    assert cache.file_fingerprint(p) != before
