"""Streamed formats and verify-while-loading (issue 15, goals 1 and 3).

The safetensors serializer writes the format itself (header first, then each tensor's memory): the
files must be read by the safetensors library unchanged, and files the library wrote must be read by
the serializer. Loading verifies in the read that loads: a corrupted file raises
ChecksumMismatchError and never returns data, whichever serializer and read path is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xxhash

import ckptstore
from ckptstore.checksum import HashingReader, hash_fd, hash_file
from ckptstore.errors import ChecksumMismatchError, InvalidArgumentError, SerializerError

torch = pytest.importorskip("torch")
safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file as np_load_file  # noqa: E402
from safetensors.numpy import save_file as np_save_file  # noqa: E402
from safetensors.torch import load_file as torch_load_file  # noqa: E402

NUMPY_DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "uint16", "uint32",
                "uint64", "bool", "complex64"]  # fmt: skip
TORCH_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
                torch.int8, torch.uint8, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16,
                torch.uint32, torch.uint64, torch.complex64]  # fmt: skip


def _np_state() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    state: dict[str, np.ndarray] = {}
    for i, name in enumerate(NUMPY_DTYPES):
        shape = (3, 5) if i % 2 else (7,)
        state[f"t.{name}"] = (rng.standard_normal(shape) * 50).astype(name)
    state["scalar"] = np.array(3.5, dtype=np.float32)  # 0-d
    state["empty"] = np.zeros((0, 4), dtype=np.float32)
    state["strided"] = np.arange(60, dtype=np.int32).reshape(6, 10)[:, ::3]  # non-contiguous
    state["fortran"] = np.asfortranarray(np.arange(12, dtype=np.float64).reshape(3, 4))
    state["bigendian"] = np.arange(5, dtype=">i4")
    return state


def _torch_state() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    state: dict[str, torch.Tensor] = {}
    for i, dtype in enumerate(TORCH_DTYPES):
        shape = (4, 3) if i % 2 else (9,)
        base = torch.randn(shape, generator=gen, dtype=torch.float32) * 20
        state[f"t.{dtype}"] = base.to(dtype) if dtype.is_floating_point else base.abs().to(dtype)
    state["scalar"] = torch.tensor(2.0)
    state["empty"] = torch.zeros(0, 3, dtype=torch.bfloat16)
    state["transposed"] = torch.arange(20, dtype=torch.float32).reshape(4, 5).t()  # non-contiguous
    state["sliced"] = torch.arange(40, dtype=torch.int64)[::4]
    state["requires_grad"] = torch.ones(3, requires_grad=True)
    return state


def _file(store: ckptstore.Store, epoch: int, name: str) -> Path:
    with store.get(epoch).local_path() as root:
        return root / name


def _assert_same_numpy(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype.newbyteorder("<") or got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


def _assert_same_torch(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        want_bytes = v.detach().contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(got[k].contiguous().reshape(-1).view(torch.uint8), want_bytes), k


# -- safetensors: the library reads what we write, we read what it writes ------------------------------------------
def test_streamed_safetensors_numpy_is_read_by_the_library_unchanged(tmp_path: Path) -> None:
    state = _np_state()
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="safetensors")
    path = _file(store, 1, "model.safetensors")
    _assert_same_numpy(np_load_file(str(path)), state)
    with safe_open(str(path), framework="np") as f:
        assert f.metadata() == {"ckptstore.framework": "numpy"}
        assert sorted(f.keys()) == sorted(state)
    for mmap in (True, False):
        _assert_same_numpy(store.get(1).load(mmap=mmap), state)


def test_streamed_safetensors_torch_is_read_by_the_library_unchanged(tmp_path: Path) -> None:
    state = _torch_state()
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="safetensors")
    path = _file(store, 1, "model.safetensors")
    _assert_same_torch(torch_load_file(str(path)), state)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"ckptstore.framework": "torch"}
        for k in state:
            assert f.get_tensor(k).dtype == state[k].dtype
    for mmap in (True, False):
        loaded = store.get(1).load(mmap=mmap)
        _assert_same_torch(loaded, state)
        loaded["t.torch.float32"].add_(1)  # writable, private memory
    _assert_same_torch(store.get(1).load(), state)  # the file never saw those writes


def test_files_written_by_the_safetensors_library_are_read(tmp_path: Path) -> None:
    state = {"a": np.arange(10, dtype=np.float32), "b": np.ones((2, 3), dtype=np.int8), "c": np.zeros(0, np.int64)}
    store = ckptstore.open(tmp_path / "s")
    with store.save(1) as tx:
        np_save_file(state, str(tx.path / "model.safetensors"), metadata={"ckptstore.framework": "numpy"})
    for mmap in (True, False):
        got = store.get(1).load(serializer="safetensors", mmap=mmap)
        _assert_same_numpy(got, state)
        as_torch = store.get(1).load(serializer="safetensors", framework="torch", mmap=mmap)
        assert torch.equal(as_torch["a"], torch.arange(10, dtype=torch.float32))


def test_streamed_layout_matches_the_library_byte_for_byte(tmp_path: Path) -> None:
    """Same tensors, same metadata: the same file as safetensors' own writer (ordering, padding, offsets)."""
    state = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.arange(3, dtype=np.int8),
             "d": np.arange(2, dtype=np.float64)}  # fmt: skip
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="safetensors")
    ours = _file(store, 1, "model.safetensors").read_bytes()
    np_save_file(state, str(tmp_path / "theirs.safetensors"), metadata={"ckptstore.framework": "numpy"})
    theirs = (tmp_path / "theirs.safetensors").read_bytes()
    n_ours, n_theirs = int.from_bytes(ours[:8], "little"), int.from_bytes(theirs[:8], "little")
    assert n_ours % 8 == 0
    assert json.loads(ours[8 : 8 + n_ours]) == json.loads(theirs[8 : 8 + n_theirs])
    assert ours[8 + n_ours :] == theirs[8 + n_theirs :]


def test_streamed_safetensors_digest_is_of_the_bytes_on_disk(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"x": np.arange(1 << 20, dtype=np.float32)}, serializer="safetensors")
    ck = store.get(1)
    entry = ck.files["model.safetensors"]
    path = _file(store, 1, "model.safetensors")
    assert (entry.size, entry.xxh3_128) == (path.stat().st_size, xxhash.xxh3_128_hexdigest(path.read_bytes()))
    assert hash_file(path) == (entry.size, entry.xxh3_128)


@pytest.mark.parametrize(
    "state",
    [
        {"x": "text"},
        {1: np.zeros(2)},
        {"x": np.array([object()], dtype=object)},
        {"x": torch.zeros(2, 2, dtype=torch.complex128)},
        {"__metadata__": np.zeros(1)},
        {"c": np.zeros(2, dtype=np.complex128)},
    ],
    ids=["str", "int-key", "object", "complex-torch", "reserved", "complex"],
)
def test_streamed_safetensors_refuses_bad_values_and_writes_nothing(tmp_path: Path, state: dict) -> None:
    store = ckptstore.open(tmp_path / "s")
    with pytest.raises(InvalidArgumentError):
        store.save_state(1, state, serializer="safetensors")
    assert store.list() == []


def test_numpy_flavour_refuses_bfloat16_with_a_clear_error(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"x": torch.ones(3, dtype=torch.bfloat16)}, serializer="safetensors")
    with pytest.raises(SerializerError, match="framework='torch'"):
        store.get(1).load(framework="numpy")


# -- safetensors: memory-mapped loads (the default on POSIX) ------------------------------------------------------
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_a_mapped_load_is_private_copy_on_write(tmp_path: Path, framework: str) -> None:
    """Tensors of a mapped load are writable, and writing them changes neither the file nor a later load."""
    state = {"w": np.arange(1 << 18, dtype=np.float32), "b": np.arange(7, dtype=np.int8)}
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="safetensors")
    before = _file(store, 1, "model.safetensors").read_bytes()
    loaded = store.get(1).load(framework=framework)
    w = loaded["w"] if framework == "numpy" else loaded["w"].numpy()
    assert w.flags.writeable
    w[:] = -1.0
    assert _file(store, 1, "model.safetensors").read_bytes() == before
    again = store.get(1).load(framework=framework)
    assert np.array_equal(np.asarray(again["w"]), state["w"])
    store.get(1).verify()


def test_a_mapped_load_outlives_the_checkpoint(tmp_path: Path) -> None:
    """gc deleting the checkpoint while its mapped tensors are alive leaves them readable and intact."""
    state = {"w": torch.arange(1 << 18, dtype=torch.float32)}
    store = ckptstore.open(tmp_path / "s", keep=ckptstore.keep.linear(1), gc_on_save=False)
    store.save_state(1, state, serializer="safetensors")
    loaded = store.get(1).load()
    store.save_state(2, state, serializer="safetensors")
    store.gc()
    assert [c.epoch for c in store.list()] == [2]
    assert not (tmp_path / "s" / "epochs" / "00000001").exists()
    assert torch.equal(loaded["w"], state["w"])


def test_the_map_is_the_file_that_was_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file swapped in under the same name right after hashing is not what gets mapped.

    The map is made from the descriptor that was hashed, so the tensors are the verified bytes,
    whatever the name points at a moment later.
    """
    import ckptstore.serializers._reader as reader_mod

    state = {"w": np.arange(1000, dtype=np.float32)}
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="safetensors")
    path = _file(store, 1, "model.safetensors")
    evil = tmp_path / "evil.safetensors"
    np_save_file({"w": np.full(1000, 666.0, dtype=np.float32)}, str(evil), metadata={"ckptstore.framework": "numpy"})
    real_hash_fd = reader_mod.hash_fd

    def hash_then_swap(fd: int) -> tuple[int, str]:
        result = real_hash_fd(fd)
        os.replace(evil, path)  # the attacker's file now has the checkpoint's name
        return result

    monkeypatch.setattr(reader_mod, "hash_fd", hash_then_swap)
    got = store.get(1).load()
    assert np.array_equal(got["w"], state["w"])
    monkeypatch.setattr(reader_mod, "hash_fd", real_hash_fd)
    with pytest.raises(ChecksumMismatchError):
        store.get(1).load()  # the swapped file itself fails verification


@pytest.mark.parametrize("mmap", [True, False])
def test_an_unaligned_file_from_elsewhere_is_read_by_both_paths(tmp_path: Path, mmap: bool) -> None:
    """A header whose length is not a multiple of 8 leaves float data unaligned: those tensors are copied."""
    a, b = np.arange(5, dtype=np.float64) * 1.5, np.arange(3, dtype=np.int8)
    header = {"a": {"dtype": "F64", "shape": [5], "data_offsets": [0, 40]},
              "b": {"dtype": "I8", "shape": [3], "data_offsets": [40, 43]}}  # fmt: skip
    text = json.dumps(header).encode()
    text += b" " * (1 if len(text) % 8 == 0 else 0)
    assert len(text) % 8
    store = ckptstore.open(tmp_path / "s")
    with store.save(1) as tx:
        (tx.path / "model.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + a.tobytes() + b.tobytes())
    got = store.get(1).load(serializer="safetensors", mmap=mmap)
    assert np.array_equal(got["a"], a) and np.array_equal(got["b"], b)
    as_torch = store.get(1).load(serializer="safetensors", framework="torch", mmap=mmap)
    assert torch.equal(as_torch["a"], torch.from_numpy(a))


@pytest.mark.parametrize("where", ["data", "header"])
def test_a_corrupted_file_fails_the_unmapped_load_too(tmp_path: Path, where: str) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"x": np.arange(500_000, dtype=np.float32)}, serializer="safetensors")
    path = _file(store, 1, "model.safetensors")
    _corrupt(path, path.stat().st_size - 1 if where == "data" else 9)
    for mmap in (True, False):
        with pytest.raises(ChecksumMismatchError, match="model\\.safetensors"):
            store.get(1).load(mmap=mmap)


def test_map_refuses_an_empty_file_with_a_typed_error(tmp_path: Path) -> None:
    class MapEmpty:
        name = "map-empty"

        def version(self) -> str:
            return "1"

        def save(self, state: object, tx: object) -> None:
            raise NotImplementedError

        def load(self, files: object, **kwargs: object) -> object:
            return files.map("empty.bin")  # type: ignore[attr-defined]

    store = ckptstore.open(tmp_path / "s")
    with store.save(1) as tx:
        (tx.path / "empty.bin").write_bytes(b"")
    with pytest.raises(SerializerError, match="empty"):
        store.get(1).load(serializer=MapEmpty())


# -- torch: no CRC, still torch.load-able -----------------------------------------------------------------------------
def test_torch_files_are_read_by_torch_load_unchanged(tmp_path: Path) -> None:
    state = {"w": torch.randn(64, 32), "b": torch.zeros(32, dtype=torch.bfloat16), "step": 7, "nested": [torch.ones(2)]}
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, state, serializer="torch")
    path = _file(store, 1, "state.pt")
    for mmap in (False, True):
        got = torch.load(path, weights_only=True, mmap=mmap)
        assert torch.equal(got["w"], state["w"]) and torch.equal(got["b"], state["b"]) and got["step"] == 7
    for mmap in (True, False):
        got = store.get(1).load(mmap=mmap)
        assert torch.equal(got["w"], state["w"]) and torch.equal(got["nested"][0], torch.ones(2))


# -- verify while loading ---------------------------------------------------------------------------------------------
def _corrupt(path: Path, offset: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        byte = os.pread(fd, 1, offset)
        os.pwrite(fd, bytes([byte[0] ^ 0x01]), offset)
    finally:
        os.close(fd)


CASES = [
    ("numpy", lambda: {f"a{i}": np.arange(300_000, dtype=np.float32) + i for i in range(3)}, "arrays/00001.npy"),
    ("numpy", lambda: np.arange(10, dtype=np.int16), "array.npy"),
    ("safetensors", lambda: {"x": torch.arange(500_000, dtype=torch.float32)}, "model.safetensors"),
    ("safetensors", lambda: {"x": np.arange(500_000, dtype=np.float32)}, "model.safetensors"),
    ("torch", lambda: {"x": torch.arange(500_000, dtype=torch.float32)}, "state.pt"),
    ("jax", lambda: {"p": [np.arange(100_000, dtype=np.float32)]}, "arrays.safetensors"),
    ("raw", lambda: {"a.bin": b"x" * 1000, "b.bin": b"y" * 10}, "b.bin"),
]


@pytest.mark.parametrize(("serializer", "make", "victim"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
@pytest.mark.parametrize("where", ["data", "header"])
def test_a_corrupted_file_raises_and_never_returns_data(
    tmp_path: Path, serializer: str, make: object, victim: str, where: str
) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, make(), serializer=serializer)  # type: ignore[operator]
    path = _file(store, 1, victim)
    size = path.stat().st_size
    _corrupt(path, size - 1 if where == "data" else min(9, size - 1))
    with pytest.raises(ChecksumMismatchError, match=victim.replace(".", r"\.")):
        store.get(1).load(**({"as_jax": False} if serializer == "jax" else {}))
    if where == "data":  # without verification the flipped bit is read as data
        store.get(1).load(verify=False, **({"as_jax": False} if serializer == "jax" else {}))


def test_a_truncated_file_raises_checksum_mismatch(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"x": np.arange(100_000, dtype=np.float64)}, serializer="safetensors")
    path = _file(store, 1, "model.safetensors")
    os.truncate(path, path.stat().st_size - 8)
    with pytest.raises(ChecksumMismatchError, match="truncated"):
        store.get(1).load()


def test_load_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No verification pass before the load: the bytes read from the data files equal their sizes."""
    import ckptstore.serializers._reader as reader_mod

    store = ckptstore.open(tmp_path / "s")
    state = {f"a{i}": np.arange(2_000_000, dtype=np.float32) * i for i in range(4)}
    store.save_state(1, state, serializer="numpy")
    read: dict[str, int] = {}
    real = reader_mod.VerifyingReader.readinto

    def counting(self: reader_mod.VerifyingReader, b: object) -> int:
        n = real(self, b)
        read[self._rel] = read.get(self._rel, 0) + n
        return n

    monkeypatch.setattr(reader_mod.VerifyingReader, "readinto", counting)
    hashed: list[int] = []
    real_hash_fd = reader_mod.hash_fd
    monkeypatch.setattr(reader_mod, "hash_fd", lambda fd: hashed.append(fd) or real_hash_fd(fd))
    got = store.get(1).load()
    _assert_same_numpy(got, state)
    ck = store.get(1)
    for name, entry in ck.files.items():
        assert read[name] == entry.size, name
    assert hashed == []  # nothing was hashed in a second pass


def test_load_still_checks_the_layout(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"x": np.zeros(3)}, serializer="safetensors")
    root = _file(store, 1, "model.safetensors").parent
    (root / "extra.bin").write_bytes(b"!")
    with pytest.raises(ckptstore.errors.UnexpectedFileError):
        store.get(1).load()


# -- the hashing reader -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 300_000, 8 * 1024 * 1024 + 3, 20 * 1024 * 1024])
def test_hashing_reader_and_hash_fd_match_xxh3(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f"
    path.write_bytes(data)
    want = (size, xxhash.xxh3_128_hexdigest(data))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert hash_fd(fd) == want
    finally:
        os.close(fd)
    with HashingReader(os.open(path, os.O_RDONLY)) as r:
        head = r.read(min(size, 5))
        buf = bytearray(max(size // 2 - len(head), 0))
        n = r.readinto(buf)
        assert head + bytes(buf[:n]) == data[: len(head) + n]
        assert r.finish() == want
    with HashingReader(os.open(path, os.O_RDONLY)) as r:
        r.read(3)
        r.seek(0)
        assert not r.sequential or size == 0


# -- large files ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("serializer", ["safetensors", "numpy"])
def test_a_flipped_byte_in_the_middle_of_a_large_file_fails_the_load(tmp_path: Path, serializer: str) -> None:
    state = {"w": np.random.default_rng(4).random(9 * 1024 * 1024).astype(np.float32)}  # 36 MiB: many 8 MiB pieces
    store = ckptstore.open(tmp_path / "s")
    checkpoint = store.save_state(1, {**state, "v": state["w"][::-1].copy()}, serializer=serializer)
    assert checkpoint is not None
    loaded = checkpoint.load()
    assert np.array_equal(loaded["w"], state["w"])
    big = max(checkpoint.files.values(), key=lambda f: f.size)
    target = tmp_path / "s" / "epochs" / "00000001" / big.path
    with open(target, "r+b") as f:
        f.seek(big.size // 2 + 12345)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ChecksumMismatchError):
        store.get(1).load()
