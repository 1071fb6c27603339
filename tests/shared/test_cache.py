"""Content-keyed feature cache: a changed input never reuses a stale entry."""

import os

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


def test_fingerprint_files_sees_size_and_mtime_not_order_or_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"123")
    (tmp_path / "b.csv").write_text("h\n")
    names = ["a/x.jpg", "b.csv"]
    before = cache.fingerprint_files(tmp_path, names)
    assert len(before) == 16 and int(before, 16) >= 0
    # the same files listed in another order, as root / name, or absolute: the same digest
    assert cache.fingerprint_files(tmp_path, names[::-1]) == before
    assert cache.fingerprint_files(tmp_path, [tmp_path / n for n in names]) == before
    assert (
        cache.fingerprint_files(str(tmp_path), [str((tmp_path / n).resolve()) for n in names])
        == before
    )
    # the walk of the folder lists exactly these two files
    assert cache.fingerprint_files(tmp_path) == before
    # same size, new mtime: a new digest; back to the old mtime: the old digest
    st = (tmp_path / "a" / "x.jpg").stat()
    (tmp_path / "a" / "x.jpg").write_bytes(b"321")
    os.utime(tmp_path / "a" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert cache.fingerprint_files(tmp_path, names) != before
    os.utime(tmp_path / "a" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.fingerprint_files(tmp_path, names) == before
    # same mtime, new size: a new digest
    (tmp_path / "a" / "x.jpg").write_bytes(b"4321")
    os.utime(tmp_path / "a" / "x.jpg", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.fingerprint_files(tmp_path, names) != before
    # a missing file hashes as absent (no error), distinct from present files
    assert cache.fingerprint_files(tmp_path, [*names, "gone.jpg"]) not in (before, "")


def test_fingerprint_files_matches_the_documented_rule(tmp_path):
    """The digest is SHA-256 over the rule name, then `name<TAB>size<TAB>mtime_ns` lines
    in sorted order (so a reader can recompute it)."""
    import hashlib

    for name, data in (("z.png", b"zz"), ("m/a.png", b"a")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    lines = [cache.FINGERPRINT_RULE + "\n"]
    for name in ("m/a.png", "z.png"):
        st = (tmp_path / name).stat()
        lines.append(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n")
    want = hashlib.sha256("".join(lines).encode()).hexdigest()[:16]
    assert cache.fingerprint_files(tmp_path, ["z.png", "m/a.png"]) == want
