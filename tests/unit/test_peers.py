"""The peers-file parser and the hostfile it becomes (pure functions, no MPI)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distrcomp.launcher.hostfile import HostfileError, render
from distrcomp.launcher.peers import Host, PeersFileError, node_hosts, parse_peers, read_peers


def test_every_accepted_form():
    text = (
        "# comment line\n"
        "\n"
        "10.0.0.2\n"
        "  10.0.0.3   slots=4   # trailing comment\n"
        "node-7.cluster:2\r\n"
        "fe80::1 slots=2\n"
        "[2001:db8::5]:3\n"
        "[2001:db8::6]\n"
        "localhost.\tslots=003\n"
    )
    assert parse_peers(text) == [
        Host("10.0.0.2", 1, 3),
        Host("10.0.0.3", 4, 4),
        Host("node-7.cluster", 2, 5),
        Host("fe80::1", 2, 6),
        Host("2001:db8::5", 3, 7),
        Host("2001:db8::6", 1, 8),
        Host("localhost.", 3, 9),
    ]


def test_error_carries_path_line_and_reason():
    with pytest.raises(PeersFileError) as caught:
        parse_peers("a\nb\nc slots=x\n", "cluster/peers.txt")
    assert str(caught.value) == "cluster/peers.txt:3: slots must be a positive integer, got 'x'"
    assert (caught.value.path, caught.value.line) == ("cluster/peers.txt", 3)


def test_unreadable_file_is_line_zero(tmp_path):
    with pytest.raises(PeersFileError) as caught:
        read_peers(tmp_path / "absent.txt")
    assert caught.value.line == 0 and "cannot read" in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "absent.txt") + ": ")


def test_duplicates_compare_addresses_and_fold_case():
    with pytest.raises(PeersFileError, match="duplicate host 'Node1.' \\(first on line 1\\)"):
        parse_peers("node1\nNode1.\n")
    with pytest.raises(PeersFileError, match=":2: duplicate"):
        parse_peers("2001:db8::1\n[2001:0db8:0::1]:2\n")


def test_node_hosts_follow_file_order_and_slots():
    hosts = parse_peers("a slots=2\nb\nc:3\n")
    assert node_hosts(hosts) == ["a", "a", "b", "c", "c", "c"]
    assert node_hosts(hosts, 3) == ["a", "a", "b"]
    with pytest.raises(ValueError, match="7 nodes asked for, but the peers file offers only 6"):
        node_hosts(hosts, 7)


def test_render_both_syntaxes():
    hosts = parse_peers("a slots=2\n10.0.0.1\n")
    assert render(hosts, "mpich") == "a:2\n10.0.0.1:1\n"
    assert render(hosts, "openmpi") == "a slots=2\n10.0.0.1 slots=1\n"
    with pytest.raises(HostfileError, match="line 2: MPICH hostfiles cannot hold"):
        render(parse_peers("a\n::1\n"), "mpich")
    with pytest.raises(ValueError, match="unknown MPI flavour"):
        render(hosts, "lam")


_PIECES = st.sampled_from([
    "a", "b", "node-1", "10.0.0.1", "::1", "[::1]", "fe80::2", "localhost", ":", "::", "[", "]",
    "slots=", "slots=2", "slots=0", "slots=x", "=", "#", " ", "\t", "\n", "\r\n", "\r", "-", ".",
    "@", "0", "9", "99999", "\x00", "\x7f", "\u00e9", "\u2028", "_", "max_slots=1",
])


def _check(data) -> None:
    try:
        hosts = parse_peers(data, "p.txt")
    except PeersFileError as exc:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        assert 1 <= exc.line <= max(1, text.count("\n") + 1), (exc.line, data)
        assert str(exc).startswith(f"p.txt:{exc.line}: ")
        return
    assert hosts and all(host.slots >= 1 and host.line >= 1 for host in hosts)
    assert len({host.name.lower() for host in hosts}) == len(hosts)
    render(hosts, "openmpi")  # anything parsed can be written for Open MPI


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_property_any_text_parses_or_raises_peers_file_error(text):
    _check(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_any_bytes_parse_or_raise_peers_file_error(data):
    _check(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_any_unicode_parses_or_raises_peers_file_error(text):
    _check(text)
