"""A conformance suite that every ckptstore backend runs, shipped so third-party backends can too.

Subclass :class:`StoreTests` in a test module and give it two fixtures, ``store_url`` (a fresh,
empty store URL per test) and ``storage_options``::

    class TestMyBackend(StoreTests):
        @pytest.fixture
        def store_url(self, tmp_path): return f"mine://bucket/{uuid.uuid4().hex}"

        @pytest.fixture
        def storage_options(self): return {"endpoint": ...}

Every guarantee of the store is tested through the public API, plus raw hooks (:meth:`StoreTests.raw`)
that reach past the store with a separate fsspec filesystem to corrupt, truncate, delete and plant
partial epochs. Tests skip only by a declared capability, each with its reason.
"""

from .store_tests import RawAccess, StoreTests

__all__ = ["RawAccess", "StoreTests"]
