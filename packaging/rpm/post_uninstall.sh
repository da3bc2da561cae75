# hotswap %postun ($1: 0 on removal, 1 on upgrade): an upgrade restarts a running hotswapd on the
# new binary (swaps in flight are journaled: the new process finishes or undoes them).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart hotswapd.service >/dev/null 2>&1 || :
    fi
fi
