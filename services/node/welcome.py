"""What ``timebank up`` tells a person once the node serves: its name and keys, the tokens it wrote and what each is
for, and a one-time link with which the first coordinator makes an account and signs in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx

from shared.db import load_queries
from shared.note import read_cosignature_signer_key, read_signer_key
from shared.settings import Settings

Q = load_queries(Path(__file__).with_name("queries.sql"))

# What each token in tokens.json is for, in the order they are shown.
TOKEN_USES = {
    "coordinator": "yours: run the network by API (approve and invite members, set limits, add neighbours)",
    "auditor": "read every account and statement of the ledger (give it to your auditor)",
    "service": "the exchange's own key to the ledger (the node uses it; keep it secret)",
    "federation": "the federation's own key to the ledger (the node uses it; keep it secret)",
}


def address(settings: Settings) -> str:
    """The node's base URL, as a browser on this machine reaches it."""
    host = settings.http.host
    host = "127.0.0.1" if host in ("0.0.0.0", "", "::") else f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.http.port}"


def key_lines(settings: Settings) -> list[str]:
    """The network's verifier key (auditors and neighbours check the log with it) and its witness's key."""
    lines = [f"verifier key: {read_signer_key(settings.key_path).verifier().to_text()}"]
    if settings.witness_key_path.exists():
        witness = read_cosignature_signer_key(settings.witness_key_path).verifier().to_text()
        lines.append(f"witness key:  {witness}")
    return lines


def describe(settings: Settings, name: str, tokens: dict[str, str], tokens_path: Path) -> list[str]:
    """The lines printed once the node serves, before the sign-in link."""
    lines = [f"network {name} (origin {settings.origin}) is up at {address(settings)}"]
    lines += ["  " + line for line in key_lines(settings)]
    lines.append(f"tokens, kept in {tokens_path} (mode 0600); send one as 'Authorization: Bearer <token>':")
    width = max(len(role) for role in tokens)
    for role in sorted(tokens, key=lambda r: list(TOKEN_USES).index(r) if r in TOKEN_USES else len(TOKEN_USES)):
        lines.append(f"  {role:<{width}}  {tokens[role]}")
        lines.append(f"  {'':<{width}}  {TOKEN_USES.get(role, '')}")
    return lines


async def first_coordinator_link(settings: Settings, database_url: str, coordinator_token: str) -> str | None:
    """A one-time link that makes its visitor a coordinator and signs them in, while the network has none."""
    conn = await asyncpg.connect(database_url)
    try:
        coordinators: int = await conn.fetchval(Q["coordinators"])
    finally:
        await conn.close()
    if coordinators:
        return None
    base = address(settings)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        answer = await client.post(
            "/api/invitations",
            json={"role": "coordinator"},
            headers={"Authorization": f"Bearer {coordinator_token}"},
        )
    answer.raise_for_status()
    return base + str(answer.json()["link"])


def welcome(settings: Settings, name: str, tokens: dict[str, str], tokens_path: Path, database_url: str) -> str:
    """Everything ``timebank up`` prints once the node serves."""
    lines = describe(settings, name, tokens, tokens_path)
    try:
        link = asyncio.run(first_coordinator_link(settings, database_url, tokens["coordinator"]))
    except (OSError, httpx.HTTPError, asyncpg.PostgresError) as exc:
        lines.append(f"could not make a sign-in link for the first coordinator ({exc}); restart to try again")
    else:
        if link:
            lines.append("first coordinator: open this one-time link in a browser to make your account and sign in:")
            lines.append(f"  {link}")
        else:
            lines.append(f"sign in at {address(settings)}/login")
    lines.append("Ctrl-C stops the node.")
    return "\n".join(lines)
