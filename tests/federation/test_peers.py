"""Coordinators add and remove neighbours at run time: the handshake of credentials, replication starting, and a
removed neighbour shut out of our NATS server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from services.federation import access
from tests.federation.support import Network, auth, eventually, running


def _details(net: Network, **more: Any) -> dict[str, Any]:
    """What a network tells a neighbour's coordinators about itself (keys and address; no secrets)."""
    return {
        "origin": net.origin,
        "log_key": net.signer.verifier().to_text(),
        "witness_key": net.witness.verifier().to_text(),
        "nats_url": net.nats.url,
        "trust_limit": 300,
        **more,
    }


async def _signs_in(url: str, user: str, password: str) -> bool:
    """Whether the NATS server at ``url`` lets ``user`` in: the client protocol's CONNECT, then PING, by hand (so
    a refusal leaves no half-open client behind)."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        hello = json.dumps({"user": user, "pass": password, "verbose": False, "pedantic": False})
        writer.write(f"CONNECT {hello}\r\nPING\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    return answer.startswith(b"PONG")


async def _add(net: Network, body: dict[str, Any]) -> dict[str, Any]:
    assert net.client is not None
    r = await net.client.post("/federation/peers", json=body, headers=auth("coordinator"))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_two_coordinators_peer_their_networks_and_the_logs_flow(two_networks: tuple[Network, Network]) -> None:
    riverside, hillside = two_networks
    async with running(riverside, hillside):
        assert riverside.client is not None
        # Riverside adds hillside first, and gets the credential to hand to hillside's coordinators.
        first = await _add(riverside, _details(hillside))
        for_hillside = first["credential"]
        assert for_hillside["user"] == access.peer_user("hillside")
        # Hillside adds riverside with it, and gets one for riverside in return; riverside completes its entry.
        second = await _add(
            hillside, _details(riverside, nats_user=for_hillside["user"], nats_password=for_hillside["password"])
        )
        for_riverside = second["credential"]
        await _add(
            riverside,
            _details(
                hillside,
                nats_user=for_riverside["user"],
                nats_password=for_riverside["password"],
                issued_password=for_hillside["password"],
            ),
        )

        listed = (await riverside.client.get("/federation/peers", headers=auth("auditor"))).json()
        assert [(p["origin"], p["trust_limit"]) for p in listed] == [(hillside.origin, 300)]
        assert "password" not in str(listed)

        await riverside.transfers(5, "after-peering")
        size = await riverside.log_size()

        async def replicated() -> bool:
            peers = (await hillside.status())["peers"]
            return bool(peers) and peers[0]["replicated_size"] >= size

        await eventually(replicated, "hillside replicates riverside's log once the two have peered")

        # Riverside removes hillside: hillside's credential no longer opens riverside's server.
        r = await riverside.client.delete(f"/federation/peers/{hillside.origin}", headers=auth("coordinator"))
        assert r.status_code == 204, r.text
        assert (await riverside.status())["peers"] == []

        async def shut_out() -> bool:
            return not await _signs_in(riverside.nats.url, for_hillside["user"], for_hillside["password"])

        assert await _signs_in(riverside.nats.url, "timebank", riverside.nats_password)  # the check can pass
        await eventually(shut_out, "riverside's NATS refuses the removed neighbour's credential")
        again = await riverside.client.delete(f"/federation/peers/{hillside.origin}", headers=auth("coordinator"))
        assert again.status_code == 404


@pytest.mark.parametrize(("role", "status"), [(None, 401), ("auditor", 403), ("service", 403)])
async def test_only_coordinators_add_peers(
    two_networks: tuple[Network, Network], role: str | None, status: int
) -> None:
    riverside, hillside = two_networks
    async with running(riverside):
        assert riverside.client is not None
        headers = {} if role is None else auth(role)
        r = await riverside.client.post("/federation/peers", json=_details(hillside), headers=headers)
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
        assert (await riverside.status())["peers"] == []


async def test_a_peer_whose_key_cannot_be_read_is_refused(two_networks: tuple[Network, Network]) -> None:
    riverside, hillside = two_networks
    async with running(riverside):
        assert riverside.client is not None
        r = await riverside.client.post(
            "/federation/peers", json=_details(hillside, log_key="not a key"), headers=auth("coordinator")
        )
        assert r.status_code == 422, r.text
        assert "hillside" in r.json()["detail"]
        assert (await riverside.status())["peers"] == []
