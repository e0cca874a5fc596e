"""Conformance suites every store backend runs, shipped with sekiops (eventsourcing-style).

A backend — built in or a third party's, registered with ``sekiops.state.register`` or the
``sekiops.state_stores`` / ``sekiops.blob_stores`` entry points — proves it keeps the contract by
subclassing a suite in its own pytest tests and saying how to open a fresh, isolated store::

    from sekiops.testing import StateStoreConformance

    class TestMyStore(StateStoreConformance):
        def make_opener(self, request, tmp_path):
            url = f"mydb://{tmp_path}/db"
            return lambda service_id="default", **options: open_state_store(url, service_id, **options)

pytest collects every ``test_*`` method of the subclass. The suites need pytest (they are test
code); importing :mod:`sekiops` itself never imports them.
"""

from .blob_stores import BlobStoreConformance
from .state_stores import StateStoreConformance

__all__ = ["StateStoreConformance", "BlobStoreConformance"]
