"""Public IP addresses: `is_public_ip` says what the standard library's `ipaddress` says."""

from __future__ import annotations

import ipaddress
import random

from proxy.inspect.network import is_public_ip


def _reference(value: str) -> bool:
    value = value.strip().strip("[]")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def test_dotted_quads_are_judged_as_ipaddress_judges_them() -> None:
    rng = random.Random(5)
    special = ["0", "10", "100", "127", "169", "172", "192", "198", "203", "224", "240", "255"]
    octets = ["0", "00", "01", "9", "99", "199", "249", "250", "255", "256", "300", " 1", "", "٣"]
    values = ["8.8.8.8", "192.0.0.9", "255.255.255.255", "100.64.0.1", " 1.1.1.1 ", "[8.8.4.4]"]
    for _ in range(20_000):
        values.append(str(ipaddress.IPv4Address(rng.getrandbits(32))))
        first = rng.choice(special)
        values.append(f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}")
        values.append(".".join(rng.choice(octets) for _ in range(rng.choice((3, 4, 4, 5)))))
    public = 0
    for value in values:
        assert is_public_ip(value) == _reference(value), value
        public += is_public_ip(value)
    assert 0 < public < len(values)  # both kinds were compared
