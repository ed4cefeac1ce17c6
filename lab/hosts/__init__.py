"""Test hosts on this machine (network namespaces) for scale-out runs."""
