"""Where `verify` reads back from: the export URL derived from remote.url or --query-url,
single-node and cluster layouts (docs/victoriametrics-setup.md, "A fleet on a cluster")."""

from __future__ import annotations

import pytest

from belabox_metrics.upload.verify import export_url


@pytest.mark.parametrize(("given", "expected"), [
    # single-node VictoriaMetrics, or vmauth in front of it
    ("http://127.0.0.1:8428/api/v1/import", "http://127.0.0.1:8428/api/v1/export"),
    ("https://vmauth:8427/api/v1/write", "https://vmauth:8427/api/v1/export"),
    ("http://vm:8428/prometheus/api/v1/import", "http://vm:8428/prometheus/api/v1/export"),
    ("http://vm:8428", "http://vm:8428/api/v1/export"),
    # the cluster: vminsert's path -> vmselect's, same tenant (accountID, or accountID:projectID)
    ("https://vmauth:8427/insert/42/prometheus/api/v1/import", "https://vmauth:8427/select/42/prometheus/api/v1/export"),
    ("http://vminsert:8480/insert/7:3/prometheus/api/v1/write", "http://vminsert:8480/select/7:3/prometheus/api/v1/export"),
    # --query-url as a vmselect base, or the export URL itself
    ("http://vmselect:8481/select/1/prometheus", "http://vmselect:8481/select/1/prometheus/api/v1/export"),
    ("http://vmselect:8481/select/1/prometheus/", "http://vmselect:8481/select/1/prometheus/api/v1/export"),
    ("https://vmauth:8427/select/1/prometheus/api/v1/export", "https://vmauth:8427/select/1/prometheus/api/v1/export"),
    # the import URL's query string (extra_label) never carries over
    ("http://vm:8428/api/v1/import?extra_label=a=b", "http://vm:8428/api/v1/export"),
])
def test_export_url(given: str, expected: str) -> None:
    assert export_url(given) == expected
