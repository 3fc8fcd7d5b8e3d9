"""The peer of a connection line → (remote ip, host): the dotted-quad shortcut says what
``ipaddress`` says."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from shipper.addresses import peer as _peer

_octet = st.one_of(st.integers(0, 300).map(str), st.sampled_from(["00", "01", "007", "", "1a", "٣"]))


def _reference(peer: str) -> str | None:
    try:
        return str(ipaddress.ip_address(peer))
    except ValueError:
        return None


@settings(max_examples=500, deadline=None)
@given(st.lists(_octet, min_size=3, max_size=5))
def test_a_dotted_quad_is_its_own_address_exactly_when_ipaddress_agrees(octets: list[str]) -> None:
    peer = ".".join(octets)
    ip, host = _peer.__wrapped__(peer)
    expected = _reference(peer)
    if expected is not None:
        assert (ip, host) == (expected, None)
    else:  # not an address: kept whole as the host name, as before
        assert (ip, host) == (None, peer)


def test_other_peer_forms_still_parse() -> None:
    assert _peer("mx.example.com/192.0.2.7") == ("192.0.2.7", "mx.example.com")
    assert _peer("[2001:db8::1]") == ("2001:db8::1", None)
    assert _peer("192.0.2.7:25") == ("192.0.2.7", None)
    assert _peer("010.0.0.1") == (None, "010.0.0.1")
