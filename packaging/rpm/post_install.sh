# hotswap %post ($1: 1 on install, 2 on upgrade). The group hotswap (sysusers.d) and the state,
# inbox and run directories (tmpfiles.d); on a first install the unit is enabled, not started.
systemd-sysusers /usr/lib/sysusers.d/hotswap.conf >/dev/null 2>&1 || :
systemd-tmpfiles --create /usr/lib/tmpfiles.d/hotswap.conf >/dev/null 2>&1 || :
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl --no-reload enable hotswapd.service >/dev/null 2>&1 || :
    # the config may hold credentials: root and the hotswap group read it (mode 0640)
    chgrp hotswap /etc/hotswap/config.toml >/dev/null 2>&1 || :
fi
