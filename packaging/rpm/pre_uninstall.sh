# hotswap %preun ($1: 0 on removal, 1 on upgrade): a removal disables and stops the service.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now hotswapd.service >/dev/null 2>&1 || :
fi
