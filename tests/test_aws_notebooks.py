"""Notebooks 01 (inventory and offload) and 02 (guarded migration) run headless (papermill) against
a DynamoDB + S3 deployment on moto, with the AWS URLs as parameters; the notebooks are unchanged."""

from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from conformance.stores import dynamodb_url, s3_url
from sekiops.blob import open_blob_store
from sekiops.pipeline.restore import RestoreOptions, restore
from sekiops.state import open_state_store
from sekiops.state.base import iter_rows
from test_inventory import build_deployment
from test_notebooks import _outputs

pytestmark = pytest.mark.aws

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def aws_deployment(request, tmp_path, monkeypatch):
    monkeypatch.setenv("SEKIOPS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("SEKIOPS_WIDGETS", "0")
    state_url, blob_url = dynamodb_url(request), s3_url(request)
    state, blob = open_state_store(state_url), open_blob_store(blob_url)
    try:
        info = build_deployment(state, blob)
    finally:
        state.close()
        blob.close()
    monkeypatch.setenv("SEKIOPS_STATE_URL", state_url)
    monkeypatch.setenv("SEKIOPS_BLOB_URL", blob_url)
    return state_url, blob_url, info


def _run(name: str, tmp_path, parameters: dict):
    import papermill as pm

    path = REPO / "notebooks" / name
    out = tmp_path / f"{path.stem}.out.ipynb"
    t = time.perf_counter()
    pm.execute_notebook(str(path), str(out), parameters=parameters, kernel_name="python3", cwd=str(tmp_path),
                        progress_bar=False, execution_timeout=600)
    nb = nbformat.read(str(out), as_version=4)
    text = _outputs(nb)
    print(f"\n{name} on DynamoDB + S3: {time.perf_counter() - t:.1f} s")
    assert "ERROR" not in text, text[-3000:]
    return nb, text


def test_notebook_01_on_dynamodb_and_s3(aws_deployment, tmp_path):
    state_url, blob_url, info = aws_deployment
    nb, text = _run("01_inventory_and_offload.ipynb", tmp_path,
                    {"state_url": state_url, "blob_url": blob_url, "audit_grace": "0", "check_blobs": True})
    state = open_state_store(state_url)
    try:
        rows = sum(1 for _ in iter_rows(state))
    finally:
        state.close()
    assert f"{rows} rows in" in text
    assert "certified: 1 orphan(s)" in text and "services covered (store): default" in text
    assert info["orphan"][:40] in text  # (the frame shortens long keys)
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3


def test_notebook_02_offload_on_dynamodb_and_s3(aws_deployment, tmp_path):
    state_url, blob_url, _ = aws_deployment
    _run("02_guarded_migration.ipynb", tmp_path,
         {"kind": "offload", "state_url": state_url, "blob_url": blob_url, "threshold": 20_000, "canary": 0,
          "execute": True, "confirm_service": "default", "journal": str(tmp_path / "offload.jsonl")})
    state, blob = open_state_store(state_url), open_blob_store(blob_url)
    try:
        big = state.get("Big", "1")
        assert big.is_offloaded and big.offload_provider == "AwsS3"
        for row in iter_rows(state):
            if row.is_tombstoned:
                continue
            restore(state, blob, open("/dev/null", "wb"), projector_name=row.projector_name,
                    projector_version=row.projector_version, options=RestoreOptions(verify=True))
    finally:
        state.close()
        blob.close()
