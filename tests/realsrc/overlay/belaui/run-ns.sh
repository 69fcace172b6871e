#!/bin/sh
# Run belaUI in a private mount namespace that fakes only the hardware paths it reads:
#   /sys/bus/usb/devices (empty: no Cam Link), /sys/class/sound (empty: no capture cards),
#   /sys/class/thermal/thermal_zone0 (the SoC sensor, TEMP_MILLIC), and /etc/resolv.conf
#   (nameserver 127.0.0.1: its DNS checks fail at once on loopback instead of going out).
# Everything else (websocket, bcrypt auth, config/token files, stream start/stop) is real.
#
# usage: unshare -m --propagation private sh run-ns.sh APP_DIR RUN_DIR PORT [TEMP_MILLIC]
# (APP_DIR: what setup.sh printed; RUN_DIR: holds setup.json, config.json and state/)
set -eu
APP=$1 RUN=$2 PORT=$3 TEMP=${4:-52700}
mount -t tmpfs realsrc-bus /sys/bus && mkdir -p /sys/bus/usb/devices
mount -t tmpfs realsrc-class /sys/class && mkdir -p /sys/class/thermal/thermal_zone0 /sys/class/sound
echo soc-thermal > /sys/class/thermal/thermal_zone0/type
echo "$TEMP" > /sys/class/thermal/thermal_zone0/temp
# a Jetson's INA3221 power monitor (belaUI reads it with "hw": "jetson"), when asked for:
# REALSRC_INA3221="MILLIVOLTS MILLIAMPERES"
if [ -n "${REALSRC_INA3221:-}" ]; then
  INA=/sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0
  mkdir -p "$INA"
  echo "${REALSRC_INA3221% *}" > "$INA/in_voltage0_input"
  echo "${REALSRC_INA3221#* }" > "$INA/in_current0_input"
fi
echo "nameserver 127.0.0.1" > "$RUN/resolv.conf"
mount --bind "$RUN/resolv.conf" /etc/resolv.conf 2>/dev/null ||
  echo "run-ns.sh: could not bind /etc/resolv.conf; belaUI's DNS checks use the real resolver" >&2
export REALSRC_BELAUI_STATE="$RUN/state"
cd "$RUN"
exec python3 "$APP/launch.py" "$PORT" "$APP"
