"""Multi-host tests on network-namespace hosts (see README.md)."""
