"""Fuzzing with hypothesis: bad input is refused with a typed error and changes nothing, and a real store
behaves like a simple model over any sequence of save / gc / pin / unpin / rollback / restart.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import ckptstore
from ckptstore.manifest import Manifest

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mem(**config: Any) -> ckptstore.CheckpointStore:
    return ckptstore.open(f"memory://fuzz-{uuid.uuid4().hex}", **config)


def _listing(store: ckptstore.CheckpointStore) -> dict[str, bytes]:
    files = store.backend.stat_files("")
    return {k: store.backend.read_bytes(k) for k in files if not k.startswith(("log/", "probe/"))}


_STORE = _mem(monitor="loss")
with _STORE.save(1, metrics={"loss": 1.0}) as _tx, _tx.open("a.bin") as _f:
    _f.write(b"a")

names = st.one_of(
    st.sampled_from(["..", "../x", "/abs", "a/../../b", "a\x00b", "x" * 300, "a\\b", "MANIFEST.json", ".claim", ""]),
    st.text(min_size=1, max_size=40),
)


@FAST
@given(name=names)
def test_file_names_either_stay_inside_or_are_refused_and_change_nothing(name: str) -> None:
    before = _listing(_STORE)
    try:
        with _STORE.save(2, metrics={"loss": 0.5}) as tx, tx.open(name) as f:
            f.write(b"x")
    except ckptstore.InvalidArgumentError:
        assert _listing(_STORE) == before
        return
    ck = _STORE.get(2)
    (stored,) = ck.files
    assert not stored.startswith("/") and ".." not in stored.split("/")
    assert ck.verify()
    _STORE.rollback(1)  # back to the state before the example


@FAST
@given(epoch=st.one_of(st.integers(max_value=-1), st.integers(min_value=10**8), st.floats(), st.text(), st.booleans()))
def test_bad_epochs_are_refused(epoch: Any) -> None:
    before = _listing(_STORE)
    try:
        with _STORE.save(epoch, metrics={"loss": 0.1}) as tx, tx.open("x") as f:
            f.write(b"x")
    except ckptstore.InvalidArgumentError:
        assert _listing(_STORE) == before
        return
    raise AssertionError(f"epoch {epoch!r} was accepted")


@FAST
@given(
    metrics=st.dictionaries(
        st.text(max_size=10),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=3), st.none(), st.booleans()),
        max_size=3,
    )
)
def test_metrics_are_finite_numbers_or_refused(metrics: dict[str, Any]) -> None:
    clean = all(k and isinstance(v, float) and math.isfinite(v) and not isinstance(v, bool) for k, v in metrics.items())
    assume("loss" in metrics or not clean)
    before = _listing(_STORE)
    try:
        with _STORE.save(3, metrics=metrics) as tx, tx.open("x") as f:
            f.write(b"x")
    except ckptstore.InvalidArgumentError:
        assert _listing(_STORE) == before
        return
    assert clean
    assert _STORE.get(3).metrics == metrics
    _STORE.rollback(1)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(), children, max_size=3)),
    max_leaves=10,
)


@FAST
@given(garbage=st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_malformed_manifests_index_and_pointers_never_break_a_reader(garbage: bytes) -> None:
    store = _mem(monitor="loss")
    for epoch in (1, 2):
        with store.save(epoch, metrics={"loss": 1.0 / epoch}) as tx, tx.open("a.bin") as f:
            f.write(b"data")
    store.backend.write("index.json", garbage)
    store.backend.write("pointers/last.json", garbage)
    store.backend.write("pointers/best.json", garbage)
    assert store.epochs() == [1, 2]
    assert store.latest().epoch == 2 and store.best().epoch == 2
    store.backend.write("epochs/00000002/MANIFEST.json", garbage)
    try:
        Manifest.from_json(garbage)
        parsed = True
    except ckptstore.ManifestError:
        parsed = False
    assume(not parsed)
    try:
        store.verify(2)
        raise AssertionError("a corrupt manifest verified")
    except ckptstore.VerificationError:
        pass
    chosen = store.restart("auto")
    assert chosen is not None and chosen.epoch == 1


class StoreMatchesModel(RuleBasedStateMachine):
    """A real store against a dict model: which epochs exist, best, last, pins."""

    def __init__(self) -> None:
        super().__init__()
        self.store = _mem(monitor="loss", keep=ckptstore.keep.linear(2))
        self.model: dict[int, float] = {}
        self.pins: set[int] = set()
        self.last: int | None = None
        self.parent: int | None = None  # a run never deletes the checkpoint it resumed (or rolled back) to

    def _expected_after_gc(self) -> None:
        if not self.model:
            return
        best = min(self.model, key=lambda e: (self.model[e], e))
        besides = ({best, *self.pins} | {self.parent}) - {self.last}  # kept, not counted against linear(2)
        counted = sorted((e for e in self.model if e not in besides), reverse=True)  # the last is the newest
        for epoch in counted[2:]:
            del self.model[epoch]

    @rule(epoch=st.integers(0, 30), loss=st.floats(0, 10, allow_nan=False))
    def save(self, epoch: int, loss: float) -> None:
        if epoch in self.model:
            try:
                self.store.save_state(epoch, [loss], serializer="json", metrics={"loss": loss})
            except ckptstore.CommitConflictError:
                return
            raise AssertionError(f"epoch {epoch} saved twice")
        self.store.save_state(epoch, [loss], serializer="json", metrics={"loss": loss})
        self.model[epoch] = loss
        self.last = epoch if self.last is None else max(self.last, epoch)
        self._expected_after_gc()

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        epoch = data.draw(st.sampled_from(sorted(self.model)))
        self.store.pin(epoch)
        self.pins.add(epoch)

    @precondition(lambda self: bool(self.pins))
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        epoch = data.draw(st.sampled_from(sorted(self.pins)))
        self.store.unpin(epoch)
        self.pins.discard(epoch)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def rollback(self, data: st.DataObject) -> None:
        epoch = data.draw(st.sampled_from(sorted(self.model)))
        self.store.rollback(epoch)
        self.model = {e: v for e, v in self.model.items() if e <= epoch}
        self.pins = {p for p in self.pins if p <= epoch}
        self.last = epoch
        self.parent = epoch

    @rule()
    def gc(self) -> None:
        self.store.gc()
        self._expected_after_gc()

    @rule()
    def restart(self) -> None:
        chosen = self.store.restart("auto")
        assert (chosen.epoch if chosen else None) == self.last
        if chosen is not None:
            self.parent = chosen.epoch

    @invariant()
    def same_epochs_pointers_and_pins(self) -> None:
        assert self.store.epochs() == sorted(self.model)
        assert sorted(self.store.pinned()) == sorted(self.pins)
        if self.model:
            assert self.store.latest().epoch == self.last
            best = min(self.model, key=lambda e: (self.model[e], e))
            assert self.store.best().metrics["loss"] == self.model[best]


TestStoreMatchesModel = StoreMatchesModel.TestCase
TestStoreMatchesModel.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No "explain" phase: it traces every line of a failing example and took > 300 s in CI.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)


def test_a_tie_saved_out_of_order_goes_to_the_earliest_epoch() -> None:
    """Found by the state machine in CI (seed 3): epoch 0 saved after epoch 3 with the same loss.

    The best pointer stayed at 3 (it moved only on a strict improvement) while every other path, and
    the model, call the earliest epoch best; gc then deleted epoch 0 as "not best".
    """
    store = _mem(monitor="loss", keep=ckptstore.keep.linear(2))
    for epoch in (3, 0, 1, 2):
        store.save_state(epoch, [0.0], serializer="json", metrics={"loss": 0.0})
    assert store.epochs() == [0, 2, 3]  # linear(2): 3 (last) and 2; 0 is best, kept besides
    assert store.best().epoch == 0
