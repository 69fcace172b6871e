"""Builds dashboards/belabox-metrics.json (Grafana, Prometheus data source = VictoriaMetrics).

Kept as code so panels stay consistent; tests/integration/test_dashboard.py runs every
panel's query against a real VictoriaMetrics loaded by a real agent run.
Run: python dashboards/build_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

DEV = 'device_id=~"$device"'


def q(metric: str, extra: str = "") -> str:
    return metric + "{" + DEV + ("," + extra if extra else "") + "}"


RI = "[$__rate_interval]"
PANELS: list[tuple[str, str, list[tuple[str, str]], list[tuple[float | None, str]] | None, int]] = [
    ("Temperatures per thermal zone", "celsius",
     [(q("thermal_zone_celsius"), "{{zone}}"),
      (q("thermal_trip_point_celsius", 'type="passive"'), "{{zone}} throttles at ({{trip}})")],
     [(None, "green"), (80, "orange"), (95, "red")], 12),
    ("CPU usage per core", "percent",
     [(q("cpu_usage_percent", 'cpu!="all"'), "cpu{{cpu}}"), (q("cpu_usage_percent", 'cpu="all"'), "all")], None, 12),
    ("CPU cluster frequency (throttling: current below max)", "hertz",
     [(q("cpu_frequency_hertz"), "{{policy}}"), (q("cpu_frequency_max_hertz"), "{{policy}} max")], None, 12),
    ("Memory", "bytes",
     [(q("memory_used_bytes"), "used"), (q("memory_available_bytes"), "available"),
      (q("memory_swap_used_bytes"), "swap used")], None, 12),
    ("Modem and interface throughput", "Bps",
     [(q("network_transmit_bytes_per_second"), "{{interface}} tx"),
      (q("network_receive_bytes_per_second"), "{{interface}} rx")], None, 12),
    ("Interface errors and drops (per second)", "short",
     [("sum by (interface) (rate(" + q("network_transmit_errors_total") + RI + ") + rate("
       + q("network_receive_errors_total") + RI + ") + rate(" + q("network_transmit_drops_total") + RI
       + ") + rate(" + q("network_receive_drops_total") + RI + "))", "{{interface}}")], None, 12),
    ("SRT packet loss", "percent",
     [(q("srt_packet_loss_percent"), "{{source}} {{stream}}{{path}} {{direction}}")],
     [(None, "green"), (1, "orange"), (5, "red")], 8),
    ("SRT round-trip time", "s", [(q("srt_rtt_seconds"), "{{source}} {{stream}}{{path}}")], None, 8),
    ("SRT bitrate", "bps",
     [(q("srt_receive_rate_bits_per_second"), "{{source}} receive"),
      (q("srt_send_rate_bits_per_second"), "{{source}} send")], None, 8),
    ("SRT retransmits and drops (per second)", "pps",
     [("rate(" + q("srt_packets_retransmitted_total") + RI + ")", "retransmitted {{direction}}"),
      ("rate(" + q("srt_packets_dropped_total") + RI + ")", "dropped: the viewer sees these")], None, 12),
    ("Agent: collector failures (last 5 min)", "short",
     [("sum by (collector) (increase(" + q("collector_metrics_failed_total") + "[5m]))", "{{collector}}")], None, 12),
    ("Agent: upload backlog", "short",
     [(q("storage_metrics_pending_upload"), "pending"), (q("storage_held_samples"), "held (clock untrusted)")],
     [(None, "green"), (5000, "orange"), (10000, "red")], 8),
    ("Agent: upload errors and dead letters (last 5 min)", "short",
     [("increase(" + q("uploader_upload_failures_total") + "[5m])", "failed attempts"),
      ("increase(" + q("uploader_dead_letters_total") + "[5m])", "dead letters")], None, 8),
    ("Agent: database and WAL size", "bytes",
     [(q("storage_database_size_bytes"), "database"), (q("storage_wal_size_bytes"), "WAL")], None, 8),
]


def build() -> dict[str, object]:
    panels = []
    x = y = 0
    for index, (title, unit, targets, thresholds, width) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y = 0, y + 8
        defaults: dict[str, object] = {"unit": unit}
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute",
                                      "steps": [{"color": color, "value": value} for value, color in thresholds]}
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
        panels.append({
            "id": index, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
            "targets": [{"refId": chr(65 + i), "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)],
        })
        x += width
    return {
        "title": "BELABOX encoder", "uid": "belabox-metrics", "schemaVersion": 38, "version": 1,
        "editable": True, "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "tags": ["belabox", "srt"],
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "VictoriaMetrics"},
            {"name": "device", "type": "query", "label": "Device",
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(device_id)", "refId": "device"},
             "definition": "label_values(device_id)", "includeAll": True, "multi": True, "refresh": 2},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("belabox-metrics.json")
    out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {out.name}: {len(PANELS)} panels")
