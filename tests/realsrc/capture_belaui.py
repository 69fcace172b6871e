"""Capture what the real belaUI sends, for the unit tests' fixtures.

    sudo .venv/bin/python -m tests.realsrc.capture_belaui tests/fixtures/srt/belaui-real

Starts the unmodified belaUI.js (../shared/realsrc/belaui, hardware stubbed, with tests/realsrc/overlay) on a free loopback
port in a temp dir and plays these scenes, each written as one JSON-lines file of what one
client received, `{"t": seconds since it connected, "msg": <message>}`; lines
`{"t": …, "event": …}` mark what the script did to the box at that moment:

- first_login.jsonl: a fresh box (no password): `status.set_password`, the page sets one
  and logs in with `persistent_token`, 4 s of broadcasts;
- wrong_password.jsonl: a login with a wrong password, 3 s;
- unknown_token.jsonl: a login with a token belaUI does not know, 2 s;
- modem_removed.jsonl: logged in with a token; after 3 s the modem is unplugged (the
  mmcli stub stops listing it), 8 s more;
- persistent_error.jsonl: a stream is started while srtla_send keeps failing (belaUI's
  persistent `srtla` error, re-broadcast at most once a second), 6 s, then the error stops;
  another client changes the max bitrate while streaming;
- relogin.jsonl: a second login with the token while that error is still live (belaUI
  re-sends persistent notifications at each login);
- jetson_sensors.jsonl: another belaUI with `"hw": "jetson"` and an INA3221 power monitor
  reading 5012 mV / 1236 mA (SoC 48.5 °C): login and 2.5 s of `sensors`.

The password and the tokens are test values; tokens in the captures are replaced by
"<token>" (belaUI sends them only inside `auth`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import free_port
from tests.realsrc.harness import BelaUi, Client, belaui_app

PASSWORD = "capture-pw-51"


def scrub(message: Any) -> Any:
    if isinstance(message, dict) and isinstance(message.get("auth"), dict):
        auth = dict(message["auth"])
        if "auth_token" in auth:
            auth["auth_token"] = "<token>"
        return {**message, "auth": auth}
    return message


def write(out: Path, name: str, client: Client, events: list[tuple[float, str]]) -> None:
    lines = [(t, {"t": round(t, 3), "msg": scrub(m)}) for t, m in client.received]
    lines += [(t, {"t": round(t, 3), "event": e}) for t, e in events]
    lines.sort(key=lambda item: item[0])
    (out / name).write_text("".join(json.dumps(obj, ensure_ascii=False) + "\n" for _, obj in lines))
    print(f"{name}: {len(client.received)} messages", file=sys.stderr)


def auth_reply(message: Any) -> bool:
    return isinstance(message, dict) and isinstance(message.get("auth"), dict)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="belaui-capture-") as tmp:
        box = BelaUi(belaui_app(), Path(tmp), free_port())
        box.start()
        try:
            # 1. fresh box: set the password as the page does, log in, broadcasts
            first = Client(box.url)
            first.until(lambda m: isinstance(m.get("status"), dict) and m["status"].get("set_password"),
                        15, "set_password")
            first.send({"config": {"password": PASSWORD}})
            first.send({"auth": {"password": PASSWORD, "persistent_token": True}})
            reply = first.until(auth_reply, 15, "auth")
            token = reply["auth"]["auth_token"]
            first.pump(4.0, keepalive=1.0)
            write(out, "first_login.jsonl", first, [])

            # 2. a wrong password
            wrong = Client(box.url)
            wrong.pump(0.5)
            wrong.send({"auth": {"password": "not-the-password", "persistent_token": True}})
            wrong.pump(3.0)
            write(out, "wrong_password.jsonl", wrong, [(0.5, "sent a wrong password")])
            wrong.close()
            stale = Client(box.url)
            stale.pump(0.5)
            stale.send({"auth": {"token": "bm90LWEtdG9rZW4tb2YtdGhpcy1ib3g="}})
            stale.pump(2.0)
            write(out, "unknown_token.jsonl", stale, [(0.5, "sent a token belaUI does not know")])
            stale.close()
            first.close()

            # 3. the modem is unplugged
            modem = Client(box.url)
            modem.send({"auth": {"token": token}})
            modem.until(auth_reply, 15, "auth")
            modem.pump(3.0, keepalive=1.0)
            unplugged = time.monotonic() - modem.t0
            box.set_modem(False)
            modem.pump(8.0, keepalive=1.0)
            write(out, "modem_removed.jsonl", modem, [(unplugged, "modem unplugged")])
            modem.close()
            box.set_modem(True)

            # 4. a persistent error while streaming, and a max bitrate change by another client
            stream = Client(box.url)
            stream.send({"auth": {"token": token}})
            pipelines = stream.until(lambda m: "pipelines" in m, 15, "pipelines")["pipelines"]
            pipeline = next(k for k, v in pipelines.items() if v.get("name") == "generic/test")
            stream.pump(1.0)
            events = [(time.monotonic() - stream.t0, "srtla_send fails; stream started")]
            box.set_srtla_error("Failed to establish any initial connections\n")
            stream.send({"start": {"pipeline": pipeline, "delay": 0, "max_br": 4200, "srt_latency": 2000,
                                   "bitrate_overlay": False, "srtla_addr": "127.0.0.1", "srtla_port": 5000,
                                   "srt_streamid": "test"}})
            stream.pump(6.0, keepalive=1.0)

            # 5. another login while the error is live
            relogin = Client(box.url)
            relogin.send({"auth": {"token": token}})
            relogin.until(auth_reply, 15, "auth")
            relogin.pump(1.5, keepalive=1.0)
            write(out, "relogin.jsonl", relogin, [])

            events.append((time.monotonic() - stream.t0, "srtla_send stops failing"))
            box.set_srtla_error(None)
            stream.pump(7.0, keepalive=1.0)
            events.append((time.monotonic() - stream.t0, "another client sets max_br 3000"))
            relogin.send({"bitrate": {"max_br": 3000}})
            stream.pump(2.0, keepalive=1.0)
            relogin.send({"stop": 0})
            stream.pump(2.0, keepalive=1.0)
            write(out, "persistent_error.jsonl", stream, events)
            relogin.close()
            stream.close()
        finally:
            box.stop()
            print(box.log_tail()[-600:], file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="belaui-capture-") as tmp:
        box = BelaUi(belaui_app(), Path(tmp), free_port(), temp_millic=48500, hw="jetson",
                     ina3221=(5012, 1236))
        box.start()
        try:
            first = Client(box.url)
            first.until(lambda m: isinstance(m.get("status"), dict) and m["status"].get("set_password"),
                        15, "set_password")
            first.send({"config": {"password": PASSWORD}})
            first.send({"auth": {"password": PASSWORD, "persistent_token": False}})
            first.until(auth_reply, 15, "auth")
            first.pump(2.5, keepalive=1.0)
            write(out, "jetson_sensors.jsonl", first, [])
            first.close()
        finally:
            box.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/srt/belaui-real"))
