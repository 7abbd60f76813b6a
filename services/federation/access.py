"""Who may do what on our NATS server: our own services everything, each neighbour only what peering needs.

A neighbour signs in with the credential we issued it (user ``peer-<its name>``) and may only:

- read our log through the durable consumer made for it (ask for the next batches, acknowledge them);
- read our shared offers (our offers bucket) the same way, through the durable consumer made for it there;
- send requests to our witness;
- receive the answers, on its own inbox prefix ``_INBOX_<its name>.``.

It can publish into none of our streams, read no other consumer or stream, and call no other JetStream API.
The rendered block goes into our nats-server's configuration (``timebank up`` writes it; deploy/ shows it).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from services.federation import names


def peer_user(peer: str) -> str:
    """The NATS user a neighbour signs in to our server as."""
    return f"peer-{peer}"


def inbox_prefix(network: str) -> str:
    """The inbox prefix a network's NATS clients use on neighbours' servers (answers come only there)."""
    return f"_INBOX_{network}"


def peer_permissions(our_name: str, peer: str) -> dict[str, dict[str, list[str]]]:
    """The subjects the neighbour ``peer`` may publish and subscribe to on our server."""
    stream = names.log_stream(our_name)
    offers = names.offers_stream(our_name)
    consumer = names.peer_consumer(peer)
    return {
        "publish": {
            "allow": [
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
                f"$JS.ACK.{stream}.{consumer}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{offers}.{consumer}",
                f"$JS.ACK.{offers}.{consumer}.>",
                names.witness_subject(our_name),
            ]
        },
        "subscribe": {"allow": [f"{inbox_prefix(peer)}.>"]},
    }


def authorization(our_name: str, local_user: str, local_password: str, issued: dict[str, str]) -> str:
    """The nats-server ``authorization`` block: our services' user, and one user per neighbour (``issued`` maps a
    neighbour's NATS name to the password we issued it)."""
    users: list[dict[str, object]] = [{"user": local_user, "password": local_password}]
    for peer, password in sorted(issued.items()):
        users.append({"user": peer_user(peer), "password": password, "permissions": peer_permissions(our_name, peer)})
    # The configuration format accepts JSON objects, and JSON strings quote every character the format reserves.
    return "authorization " + json.dumps({"users": users}, indent=2)


def write_authorization(path: Path, block: str) -> None:
    """Replace the authorization file in one step (the server never reads half of it)."""
    partial = path.with_name(path.name + ".new")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(block + "\n")
    os.replace(partial, path)


def reload_server(pid_file: Path) -> bool:
    """Have the nats-server whose pid is in ``pid_file`` reload its configuration (SIGHUP); False if it is not
    running."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True
