"""Gallery: nearest-neighbour naming, "unknown product", adding products, file round trip and
clear errors for corrupt files."""

import json
import zipfile

import numpy as np
import pytest

from dpsnet.recognition import UNKNOWN, Gallery
from dpsnet.utils.io import BadInputError


def _unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def clusters():
    """Ten products, five exemplars each, tight clusters around random unit centres; queries
    drawn from the same clusters."""
    rng = np.random.default_rng(0)
    centres = _unit(rng, 10, 16)
    ids = np.repeat(np.arange(100, 110), 5)
    emb = centres[ids - 100] + 0.05 * rng.normal(size=(50, 16)).astype(np.float32)
    q_ids = np.repeat(np.arange(100, 110), 3)
    queries = centres[q_ids - 100] + 0.05 * rng.normal(size=(30, 16)).astype(np.float32)
    return emb, ids, queries, q_ids


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_nearest_neighbour_names_queries(clusters, backend):
    emb, ids, queries, q_ids = clusters
    gallery = Gallery(emb, ids, backend=backend)
    pred, dist = gallery.classify(queries)
    assert (pred == q_ids).all()
    brute = np.linalg.norm(queries[:, None] - emb[None], axis=2)
    assert np.allclose(dist, brute.min(1), atol=1e-3)


def test_backends_agree_on_k_nearest(clusters):
    emb, ids, queries, _ = clusters
    d_t, i_t = Gallery(emb, ids, backend="torch").search(queries, 4)
    d_n, i_n = Gallery(emb, ids, backend="numpy").search(queries, 4)
    assert (i_t == i_n).all()
    assert np.allclose(d_t, d_n, atol=1e-4)
    assert (np.diff(d_n, axis=1) >= 0).all()


def test_unknown_product_beyond_the_threshold(clusters):
    emb, ids, queries, q_ids = clusters
    rng = np.random.default_rng(1)
    strangers = _unit(rng, 5, 16)  # far from every cluster centre
    nearest = Gallery(emb, ids).classify(strangers)[1]
    threshold = float(nearest.min()) - 1e-3
    assert threshold > 0.3  # the clusters' own queries lie within ~0.3
    gallery = Gallery(emb, ids, unknown_distance=threshold)
    pred, dist = gallery.classify(strangers)
    assert (pred == UNKNOWN).all() and (dist > threshold).all()
    pred, _ = gallery.classify(queries)
    assert (pred == q_ids).all()
    # An explicit threshold overrides the gallery's; a tiny one makes everything unknown.
    assert (gallery.classify(queries, unknown_distance=1e-6)[0] == UNKNOWN).all()


def test_adding_a_product_changes_its_answers_and_nothing_else(clusters):
    emb, ids, queries, q_ids = clusters
    new = ids == 109
    gallery = Gallery(emb[~new], ids[~new], {int(p): f"p{p}" for p in ids[~new]})
    before, _ = gallery.classify(queries)
    assert not (before == 109).any()
    gallery.add_product(109, "new product", emb[new])
    after, _ = gallery.classify(queries)
    assert (after[q_ids == 109] == 109).all()
    assert (after[q_ids != 109] == before[q_ids != 109]).all()
    assert gallery.names[109] == "new product" and 109 in gallery.products
    with pytest.raises(ValueError, match="already in the gallery"):
        gallery.add_product(109, "again", emb[new])
    gallery.add_product(109, "replaced", emb[new][:2], replace=True)
    assert (gallery.product_ids == 109).sum() == 2
    with pytest.raises(ValueError):
        gallery.add_product(110, "wrong dimension", np.zeros((2, 8), np.float32))


def test_save_load_round_trip(clusters, tmp_path):
    emb, ids, _, _ = clusters
    gallery = Gallery(emb, ids, {100: "cola"}, 0.7, meta={"embedder": {"arch": "resnet18"}})
    gallery.save(tmp_path / "g.npz")
    loaded = Gallery.load(tmp_path / "g.npz", backend="numpy")
    assert np.array_equal(loaded.embeddings, gallery.embeddings)
    assert np.array_equal(loaded.product_ids, ids)
    assert loaded.names[100] == "cola" and loaded.names[101] == "101"
    assert loaded.unknown_distance == pytest.approx(0.7)
    assert loaded.meta["embedder"]["arch"] == "resnet18"
    assert loaded.backend == "numpy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]  # no temporary left


def test_limit_per_product(clusters):
    emb, ids, _, _ = clusters
    gallery = Gallery(emb, ids)
    gallery.limit_per_product(2, seed=0)
    assert len(gallery) == 20
    assert all((gallery.product_ids == p).sum() == 2 for p in gallery.products)


def _corrupt(tmp_path, good, kind):
    path = tmp_path / f"{kind}.npz"
    if kind == "garbage":
        path.write_bytes(b"this is not a gallery at all\n" * 10)
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "missing_arrays":
        np.savez(path, embeddings=np.zeros((2, 4), np.float32))
    elif kind == "bad_meta":
        np.savez(
            path,
            embeddings=np.zeros((2, 4), np.float32),
            product_ids=np.zeros(2, np.int64),
            meta=np.array("{not json"),
        )
    elif kind == "meta_not_a_dict":
        np.savez(
            path,
            embeddings=np.zeros((2, 4), np.float32),
            product_ids=np.zeros(2, np.int64),
            meta=np.array(json.dumps([1, 2])),
        )
    elif kind == "wrong_version":
        np.savez(
            path,
            embeddings=np.zeros((2, 4), np.float32),
            product_ids=np.zeros(2, np.int64),
            meta=np.array(json.dumps({"version": 99})),
        )
    elif kind == "shape_mismatch":
        np.savez(
            path,
            embeddings=np.zeros((2, 4), np.float32),
            product_ids=np.zeros(3, np.int64),
            meta=np.array(json.dumps({"version": 1})),
        )
    elif kind == "nan":
        np.savez(
            path,
            embeddings=np.full((2, 4), np.nan, np.float32),
            product_ids=np.zeros(2, np.int64),
            meta=np.array(json.dumps({"version": 1})),
        )
    elif kind == "pickled":
        np.savez(
            path,
            embeddings=np.array([object()], dtype=object),
            product_ids=np.zeros(1, np.int64),
            meta=np.array(json.dumps({"version": 1})),
        )
    elif kind == "bad_member":
        data = bytearray(good.read_bytes())
        with zipfile.ZipFile(good) as z:
            info = z.getinfo("embeddings.npy")
        # Flip bytes inside the stored array: the zip's CRC check must catch it.
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
        data[start : start + 16] = bytes(16)
        path.write_bytes(bytes(data))
    return path


CORRUPTIONS = [
    "garbage",
    "truncated",
    "empty",
    "missing_arrays",
    "bad_meta",
    "meta_not_a_dict",
    "wrong_version",
    "shape_mismatch",
    "nan",
    "pickled",
    "bad_member",
]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_gallery_file_gets_a_clear_error(clusters, tmp_path, kind):
    emb, ids, _, _ = clusters
    good = tmp_path / "good.npz"
    Gallery(emb, ids).save(good)
    path = _corrupt(tmp_path, good, kind)
    with pytest.raises(BadInputError) as info:
        Gallery.load(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_missing_gallery_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        Gallery.load(tmp_path / "nope.npz")


def test_empty_gallery_answers_unknown_and_bad_queries_are_refused(clusters):
    _, _, queries, _ = clusters
    empty = Gallery(np.zeros((0, 16), np.float32), np.zeros(0, np.int64))
    pred, dist = empty.classify(queries)
    assert (pred == UNKNOWN).all() and np.isinf(dist).all()
    with pytest.raises(ValueError, match="dimension"):
        empty.search(np.zeros((3, 8), np.float32))


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_search_in_chunks_matches_one_pass(clusters, backend, monkeypatch):
    import dpsnet.recognition.gallery as gallery_module

    emb, ids, queries, _ = clusters
    gallery = Gallery(emb, ids, backend=backend)
    whole = gallery.search(queries, 3)
    monkeypatch.setattr(gallery_module, "_MAX_PAIRS", 7 * len(emb))  # 7 queries per chunk
    chunked = gallery.search(queries, 3)
    assert np.array_equal(whole[1], chunked[1]) and np.allclose(whole[0], chunked[0])
    # Replacing the embeddings array refreshes the cached norms.
    gallery.embeddings = emb[::-1].copy()
    assert (gallery.search(queries, 1)[1][:, 0] == len(emb) - 1 - whole[1][:, 0]).all()


def test_faiss_backend_agrees_when_installed(clusters):
    pytest.importorskip("faiss")
    emb, ids, queries, _ = clusters
    d_f, i_f = Gallery(emb, ids, backend="faiss").search(queries, 3)
    d_n, i_n = Gallery(emb, ids, backend="numpy").search(queries, 3)
    assert (i_f == i_n).all() and np.allclose(d_f, d_n, atol=1e-3)
