"""Test hosts for molecule: systemd-nspawn containers booting systemd, each in its own network namespace.

The executable ``molecule/shared/nspawn-hosts`` is the entry point (``cli``). The modules, in the order a run uses
them:

- ``settings``: the paths, address range and mirrors, from ``IJM_*`` environment variables, in one place.
- ``system``: running commands, the harness's lock and what /proc says about processes and mounts.
- ``platform``: a scenario's platforms, checked and given addresses (pure functions, unit-tested).
- ``prerequisites``: what this machine must have before anything is created.
- ``image``: the cached Debian base image each host boots from (debootstrap, once per machine).
- ``network``: the bridge, one network namespace and veth per host, the NAT and forward rules.
- ``hosts``: a host's overlay root, its boot and readiness, and ``up``/``down``/``status``/``shell``.

Standard library only: it runs with the system python3 before any venv exists.
"""
