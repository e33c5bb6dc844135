"""Non-blocking ``save_state`` blocks only for a snapshot (issue "Speed", goal 2).

Proved without clocks: a serializer that waits on an event the test sets only after ``save_state``
returned shows that serialization runs in the background; identity of the arrays a serializer sees
shows which inputs are copied and that buffers are reused; real processes show what happens at
interpreter exit.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore.serializers import get_serializer

np = pytest.importorskip("numpy")


class Recording:
    """Wraps a real serializer; records what it was handed and where it ran; can wait on a gate."""

    def __init__(self, inner: str = "numpy", gate: threading.Event | None = None, fail: bool = False) -> None:
        self.inner = get_serializer(inner)
        self.name = self.inner.name
        self.gate = gate
        self.fail = fail
        self.seen: list[Any] = []
        self.threads: list[str] = []
        self.started = threading.Event()

    def version(self) -> str:
        return self.inner.version()

    def save(self, state: Any, tx: Any) -> None:
        self.started.set()
        self.threads.append(threading.current_thread().name)
        self.seen.append(state)
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("disk on fire")
        self.inner.save(state, tx)

    def load(self, files: Any, **kwargs: Any) -> Any:
        return self.inner.load(files, **kwargs)


def _state() -> dict[str, Any]:
    return {"w": np.arange(1000, dtype=np.float32), "b": np.ones((3, 4))}


def test_save_state_returns_before_serializing_and_the_caller_may_change_its_arrays(tmp_path: Path) -> None:
    gate = threading.Event()
    serializer = Recording(gate=gate)
    store = ckptstore.open(tmp_path / "s")
    state = _state()
    assert store.save_state(1, state, serializer=serializer, blocking=False) is None
    assert serializer.started.wait(60)  # it runs, in the background, while this thread goes on
    state["w"] += 100.0  # the next optimizer step, while the save is in flight
    state["b"][:] = -1
    assert 1 not in store  # not committed yet: the serializer waits for the gate
    gate.set()
    committed = store.wait()
    assert committed is not None and committed.epoch == 1
    assert serializer.threads == ["ckptstore-commit_0"]
    loaded = store.get(1).load()
    assert np.array_equal(loaded["w"], np.arange(1000, dtype=np.float32))  # the values at save time
    assert np.array_equal(loaded["b"], np.ones((3, 4)))


def test_buffers_are_reused_across_saves_and_read_only_arrays_are_handed_over(tmp_path: Path) -> None:
    serializer = Recording()
    store = ckptstore.open(tmp_path / "s")
    state = _state()
    frozen = np.arange(10.0)
    frozen.setflags(write=False)
    view_of_writable = np.arange(10.0)[2:]
    view_of_writable.setflags(write=False)  # read-only view, but its base can still change
    state.update(frozen=frozen, view=view_of_writable, blob=b"immutable")
    for epoch in (1, 2, 3):
        store.save_state(epoch, state, serializer=serializer, blocking=False)
        store.wait()
    first, second, third = serializer.seen
    assert first["w"] is not state["w"]  # copied ...
    assert second["w"] is first["w"] and third["w"] is first["w"]  # ... into the same buffer each time
    assert first["frozen"] is frozen  # read-only all the way down: not copied
    assert first["view"] is not view_of_writable  # its base is writable: copied
    assert first["blob"] is state["blob"]
    assert store.epochs() == [1, 2, 3]
    assert np.array_equal(store.get(3).load()["view"], np.arange(2.0, 10.0))


def test_a_torch_state_dict_is_snapshotted_with_its_metadata(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    gate = threading.Event()
    serializer = Recording("torch", gate=gate)
    store = ckptstore.open(tmp_path / "s")
    state = model.state_dict()
    before = {k: v.clone() for k, v in state.items()}
    store.save_state(1, state, serializer=serializer, blocking=False)
    assert serializer.started.wait(60)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    gate.set()
    store.wait()
    seen = serializer.seen[0]
    assert isinstance(seen, collections.OrderedDict) and seen._metadata == state._metadata
    loaded = store.get(1).load()
    assert all(torch.equal(loaded[k], before[k]) for k in before)


def test_a_background_failure_surfaces_on_the_next_save(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, _state(), serializer=Recording(fail=True), blocking=False)
    with pytest.raises(ckptstore.SerializerError, match="disk on fire"):
        store.save_state(2, _state(), serializer="numpy")
    assert store.epochs() == []  # nothing of epoch 1, and epoch 2 was not attempted
    store.save_state(2, _state(), serializer="numpy")  # reported once; the store goes on
    assert store.epochs() == [2]


@pytest.mark.parametrize("how", ["wait", "close"])
def test_a_background_failure_surfaces_on_wait_and_close(tmp_path: Path, how: str) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, _state(), serializer=Recording(fail=True), blocking=False)
    with pytest.raises(ckptstore.SerializerError, match="disk on fire"):
        getattr(store, how)()
    assert any("non-blocking save failed" in line for line in store.log())


def test_one_save_in_flight_by_default_more_when_configured(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "one")
    store.save_state(1, _state(), serializer="numpy", blocking=False)
    store.save_state(2, _state(), serializer="numpy", blocking=False)
    assert 1 in store  # the second call waited for the first commit before it snapshotted
    store.wait()

    gate = threading.Event()
    two = ckptstore.open(tmp_path / "two", pending_saves=2)
    two.save_state(1, _state(), serializer=Recording(gate=gate), blocking=False)
    two.save_state(2, _state(), serializer="numpy", blocking=False)  # returns although 1 is still running
    assert 1 not in two and 2 not in two
    gate.set()
    assert two.wait() is not None
    assert two.epochs() == [1, 2]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, 65])
def test_pending_saves_is_validated(tmp_path: Path, bad: object) -> None:
    with pytest.raises((ckptstore.InvalidArgumentError, ckptstore.InvalidArgumentTypeError)):
        ckptstore.open(tmp_path / "s", pending_saves=bad)
    assert not (tmp_path / "s").exists()


_EXIT = """
import sys, numpy as np, ckptstore
sys.path.insert(0, {tests!r})
from test_async_snapshot import Recording
store = ckptstore.open({root!r})
store.save_state(1, {{"w": np.arange(10.0)}}, serializer=Recording(fail={fail}), blocking=False)
# the script ends here, without wait() or close()
"""


@pytest.mark.parametrize("fail", [False, True])
def test_at_interpreter_exit_a_pending_save_is_finished_or_reported(tmp_path: Path, fail: bool) -> None:
    root = tmp_path / "s"
    code = _EXIT.format(tests=str(Path(__file__).parent), root=str(root), fail=fail)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    store = ckptstore.open(root)
    if fail:
        assert "failed and was not saved" in done.stderr and "disk on fire" in done.stderr
        assert store.epochs() == []
    else:
        assert done.returncode == 0, done.stderr
        assert store.epochs() == [1] and store.get(1).verify() is not None


def test_cuda_tensors_are_copied_to_pinned_memory(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine: the device-to-host snapshot path cannot run here")
    store = ckptstore.open(tmp_path / "s")
    serializer = Recording("torch")
    state = {"w": torch.arange(1000.0, device="cuda")}
    store.save_state(1, state, serializer=serializer, blocking=False)
    state["w"].add_(1.0)
    store.wait()
    assert serializer.seen[0]["w"].is_pinned()
    assert torch.equal(store.get(1).load()["w"], torch.arange(1000.0))


def test_a_save_that_copies_nothing_does_not_lose_the_buffers_of_the_others(tmp_path: Path) -> None:
    serializer = Recording()
    store = ckptstore.open(tmp_path / "s")
    state = _state()
    frozen = {k: v.copy() for k, v in state.items()}
    for array in frozen.values():
        array.setflags(write=False)
    for epoch, value in enumerate((state, frozen, state), start=1):
        store.save_state(epoch, value, serializer=serializer, blocking=False)
        store.wait()
    assert serializer.seen[1]["w"] is frozen["w"]
    assert serializer.seen[2]["w"] is serializer.seen[0]["w"]  # the buffer of the first save, reused


_EXIT_LARGE = """
import sys, numpy as np, ckptstore
store = ckptstore.open({root!r})
state = {{f"w{{i}}": np.random.default_rng(i).random(200_000) for i in range(4)}}  # 1.6 MB a file: hashed in overlap
serializer = {serializer!r}
if serializer == "torch":
    import torch
    state = {{k: torch.from_numpy(v) for k, v in state.items()}}
if serializer == "files":  # a writer of its own into tx.path: hashed and fsynced in the seal
    def serializer(state, tx):
        for name, array in state.items():
            np.save(tx.path / f"{{name}}.npy", array)
store.save_state(1, state, serializer=serializer, blocking=False)
"""


@pytest.mark.parametrize("serializer", ["numpy", "torch", "safetensors", "files"])
def test_a_large_save_pending_at_exit_commits_after_the_thread_pools_stopped(tmp_path: Path, serializer: str) -> None:
    # At exit concurrent.futures refuses new work before atexit runs the pending save; hashing in
    # overlap and the deferred fsyncs then run inline instead of failing the save.
    root = tmp_path / "s"
    code = _EXIT_LARGE.format(root=str(root), serializer=serializer)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "failed" not in done.stderr, done.stderr
    store = ckptstore.open(root)
    checkpoint = store.get(1).verify()
    assert store.epochs() == [1]
    if serializer == "files":
        assert sorted(checkpoint.files) == ["w0.npy", "w1.npy", "w2.npy", "w3.npy"]
    else:
        assert sorted(checkpoint.load()) == ["w0", "w1", "w2", "w3"]
