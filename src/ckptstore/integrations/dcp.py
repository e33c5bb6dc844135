"""``torch.distributed.checkpoint`` (DCP) on a checkpoint store: sharded, atomic, verified.

    dcp.save(state_dict, storage_writer=StoreWriter(store, 3, metrics={"loss": loss}))
    dcp.load(state_dict, storage_reader=StoreReader(store.get(3)))

:class:`StoreWriter` is a DCP ``StorageWriter`` over a sharded save (:mod:`ckptstore.sharded`): the
coordinator opens the save attempt while DCP plans and hands it to every rank inside the plan (DCP's
own collectives are the agreement), each rank streams its items into ``rank-NNNNN/data.distcp``
(hashed as written) and seals its part, and the coordinator writes DCP's metadata into its part and
commits once, through the store: the rename of the staging folder locally, the create-only manifest
on object stores. Until then nothing is visible, unlike DCP's ``FsspecWriter`` on object stores. The
checkpoint gets the store's pointers, index, keep policy and metrics like any other.

:class:`StoreReader` is a DCP ``StorageReader`` over a committed checkpoint: every file it reads is
checked against the manifest's digest first, and DCP's metadata is unpickled with an allowlist of
DCP's own record types, never arbitrary code. Loading with another number of ranks, or another
sharding, is DCP's resharding and works as it does on a folder. ``dcp.async_save`` works too.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ManifestError
from ..sharded import Agreed, part_folder

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint
    from ..store import CheckpointStore
    from ..transaction import SaveTransaction

__all__ = ["StoreReader", "StoreWriter"]

DATA_FILE = "data.distcp"
"""The file each rank writes its items into (inside its part folder)."""
METADATA_FILE = ".metadata"
"""DCP's metadata, written by the coordinator into its part (``rank-00000/.metadata``)."""

try:
    import torch
    from torch.distributed.checkpoint.metadata import Metadata
    from torch.distributed.checkpoint.planner import (
        LoadItemType,
        LoadPlan,
        LoadPlanner,
        SavePlan,
        SavePlanner,
        WriteItemType,
    )
    from torch.distributed.checkpoint.storage import StorageReader, StorageWriter, WriteResult
    from torch.futures import Future
except ImportError as exc:  # pragma: no cover - torch is an extra
    from ..errors import BackendUnavailableError

    raise BackendUnavailableError(
        f"ckptstore.integrations.dcp needs torch with torch.distributed (pip install 'ckptstore[torch]'): {exc}"
    ) from exc


@dataclasses.dataclass(frozen=True)
class Location:
    """Where one item of a DCP checkpoint is: a file of the checkpoint, and a byte range in it."""

    path: str
    offset: int
    length: int


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """The sharded save attempt the coordinator opened, carried to every rank in its plan."""

    message: str


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _done(value: Any) -> Future[Any]:
    fut: Future[Any] = Future()
    fut.set_result(value)
    return fut


class StoreWriter(StorageWriter):
    """A DCP ``StorageWriter`` that commits one sharded checkpoint ``epoch`` into ``store``.

    Args:
        store: The store (the same URL on every rank).
        epoch: The epoch (or step) to save as.
        metrics: Metrics of the checkpoint (the coordinator's count), e.g. the store's monitor.
        metadata: JSON-serializable user metadata.
        timeout: Seconds the coordinator waits for every rank's part (see ``store.save``).

    Attributes:
        checkpoint: The committed checkpoint, on the coordinator once ``dcp.save`` returned.
    """

    def __init__(
        self,
        store: CheckpointStore,
        epoch: int,
        *,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        from .._validate import check_epoch, check_metadata, check_metrics

        self._store = store
        self._epoch = check_epoch(epoch, store.width)
        self._metrics = check_metrics(metrics)
        self._metadata = check_metadata(metadata)
        self._timeout = timeout
        self._coordinator = False
        self._rank, self._world = 0, 1
        self._tx: SaveTransaction | None = None
        self.checkpoint: Checkpoint | None = None

    def reset(self, checkpoint_id: Any = None) -> None:
        """A new save begins (``checkpoint_id`` is not used: the store and the epoch say where)."""
        self._tx = None
        self.checkpoint = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        """Never chosen from a checkpoint id: pass ``storage_writer=StoreWriter(...)``."""
        return False

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Learn this rank's role."""
        self._coordinator = is_coordinator
        self._rank, self._world = _rank_and_world()
        if isinstance(kwargs.get("rank"), int):
            self._rank = kwargs["rank"]

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        """Nothing to add locally."""
        return plan

    def _open(self, rank: int, world: int, broadcast: Agreed) -> SaveTransaction:
        tx = self._store.save(
            self._epoch,
            metrics=self._metrics if rank == 0 else None,
            metadata=self._metadata if rank == 0 else None,
            force=True,
            rank=rank,
            world_size=world,
            broadcast=broadcast,
            timeout=self._timeout,
        )
        return tx.__enter__()

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        """The coordinator opens the save attempt and hands it to every rank in its plan."""
        agreed = Agreed()
        self._tx = self._open(0, len(plans), agreed)
        attempt = _Attempt(str(agreed.message))
        return [dataclasses.replace(plan, storage_data=attempt) for plan in plans]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        """Stream this rank's items into its part (hashed as written); other ranks seal their part here."""
        attempt = plan.storage_data
        if not isinstance(attempt, _Attempt):
            raise ManifestError("the save plan carries no save attempt: was it planned by a StoreWriter?")
        tx = self._tx if self._coordinator else self._open(self._rank, self._world, Agreed(attempt.message))
        assert tx is not None
        try:
            results = self._write(tx, plan, planner)
        except BaseException as exc:
            self._tx = None
            tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        if not self._coordinator:
            tx.__exit__(None, None, None)  # seal this rank's part; the coordinator commits
        return _done(results)

    def _write(self, tx: SaveTransaction, plan: SavePlan, planner: SavePlanner) -> list[WriteResult]:
        path = f"{part_folder(self._rank)}/{DATA_FILE}"
        results: list[WriteResult] = []
        offset = 0
        with tx.open(DATA_FILE) as stream:
            for item in plan.items:
                data = planner.resolve_data(item)
                if item.type == WriteItemType.BYTE_IO:
                    payload = bytes(data.getbuffer())
                else:
                    tensor = data.detach().cpu()
                    if tensor.untyped_storage().size() != tensor.numel() * tensor.element_size():
                        tensor = tensor.clone()  # only the view is saved, not the storage behind it
                    buffer = io.BytesIO()
                    torch.save(tensor, buffer)
                    payload = buffer.getvalue()
                stream.write(payload)
                results.append(WriteResult(item.index, len(payload), Location(path, offset, len(payload))))
                offset += len(payload)
        return results

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        """The coordinator writes DCP's metadata into its part and commits the checkpoint (one step)."""
        tx, self._tx = self._tx, None
        assert tx is not None
        try:
            metadata.storage_data = {r.index: r.storage_data for rank in results for r in rank}
            with tx.open(METADATA_FILE) as stream:
                pickle.dump(metadata, stream)
        except BaseException as exc:
            tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        tx.__exit__(None, None, None)
        self.checkpoint = tx.checkpoint


_ALLOWED_MODULES = ("torch.distributed.checkpoint.", "torch.distributed._shard.", "ckptstore.integrations.dcp")
_ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by name (torch.strided)
    ("builtins", "set"),
    ("builtins", "frozenset"),
}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's metadata holds DCP's record types, sizes and dtypes: nothing else is unpickled."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = (module, name) in _ALLOWED or module.startswith(_ALLOWED_MODULES)
        if module == "torch" and isinstance(
            getattr(torch, name, None), (torch.dtype, torch.layout, torch.memory_format)
        ):
            allowed = True
        if not allowed:
            raise ManifestError(f"DCP metadata refers to {module}.{name}, which a checkpoint's metadata never holds")
        return super().find_class(module, name)


class StoreReader(StorageReader):
    """A DCP ``StorageReader`` over a committed checkpoint; every file it reads is verified first.

    Args:
        checkpoint: A checkpoint a :class:`StoreWriter` committed (``store.get(3)``, ``store.latest()``).
    """

    def __init__(self, checkpoint: Checkpoint) -> None:
        super().__init__()
        self._checkpoint = checkpoint
        self.storage_data: dict[Any, Location] = {}

    def reset(self, checkpoint_id: Any = None) -> None:
        """A new load begins."""
        self.storage_data = {}

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        """Never chosen from a checkpoint id: pass ``storage_reader=StoreReader(...)``."""
        return False

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """DCP's metadata from the coordinator's part, verified, unpickled with an allowlist."""
        raw = self._checkpoint.read_bytes(f"{part_folder(0)}/{METADATA_FILE}", verify=True)
        try:
            metadata = _MetadataUnpickler(io.BytesIO(raw)).load()
        except ManifestError:
            raise
        except Exception as exc:
            raise ManifestError(f"{self._checkpoint.url}: DCP metadata does not load: {exc}") from None
        if not isinstance(metadata, Metadata):
            raise ManifestError(f"{self._checkpoint.url}: DCP metadata is a {type(metadata).__name__}")
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        """Remember where every item is."""
        self.storage_data = dict(metadata.storage_data or {})

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Nothing to add locally."""
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """Nothing to add globally."""
        return plans

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Read each file this rank needs once, verified, and hand DCP its items."""
        from torch.distributed._shard._utils import narrow_tensor_by_index

        per_file: dict[str, list[Any]] = {}
        for item in plan.items:
            per_file.setdefault(self.storage_data[item.storage_index].path, []).append(item)
        for path, items in per_file.items():
            data = memoryview(self._checkpoint.read_bytes(path, verify=True))
            for item in items:
                where = self.storage_data[item.storage_index]
                piece = io.BytesIO(data[where.offset : where.offset + where.length])
                if item.type == LoadItemType.BYTE_IO:
                    planner.load_bytes(item, piece)
                    continue
                tensor = torch.load(piece, map_location="cpu", weights_only=True)
                tensor = narrow_tensor_by_index(tensor, item.storage_offsets, item.lengths)
                target = planner.resolve_tensor(item).detach()
                if target.size() != tensor.size():
                    raise ManifestError(
                        f"{path}: item {item.storage_index} has size {tensor.size()}, not {target.size()}"
                    )
                target.copy_(tensor)
                planner.commit_tensor(item, target)
        return _done(None)
