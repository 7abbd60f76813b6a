"""``timebank peer add|list|remove|evidence|resolve``: manage a node's neighbours through its federation API, as a
coordinator, and resolve the fork evidence that stopped cosigning and settling with one."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx

from shared.settings import Settings

TOKEN_ENV = "TIMEBANK_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="the node's address (default: http://127.0.0.1:<http.port>)")
    parser.add_argument(
        "--token", help=f"a coordinator token (default: ${TOKEN_ENV}, or the embedded node's tokens.json)"
    )
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list the neighbours")
    add = actions.add_parser("add", help="add a neighbour (or change one); prints the credential to give it")
    add.add_argument("--origin", required=True, help="its log origin, e.g. timebank.example/hillside")
    add.add_argument("--log-key", required=True, help="its log's verifier key (vkey text)")
    add.add_argument("--witness-key", help="its witness's cosignature verifier key (vkey text)")
    add.add_argument("--nats-url", required=True, help="its NATS server, e.g. nats://hillside.example:4222")
    add.add_argument("--nats-user", help="the user it issued us on its NATS server")
    add.add_argument("--nats-password", help="the password it issued us (a secret)")
    add.add_argument("--issued-password", help="the password we issue it on ours (default: a new one)")
    add.add_argument("--name", help="its name on NATS (default: the origin's last path segment)")
    add.add_argument("--trust-limit", type=int, required=True, help="minutes its members may owe ours")
    remove = actions.add_parser("remove", help="stop peering with a neighbour")
    remove.add_argument("origin")
    actions.add_parser("evidence", help="list the fork evidence kept, open or resolved")
    resolve = actions.add_parser(
        "resolve", help="resolve the open fork evidence against a neighbour's log (see docs/federation.md)"
    )
    resolve.add_argument("origin")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--dismiss", dest="resolution", action="store_const", const="dismiss", help="keep our copy and resume"
    )
    how.add_argument(
        "--reset",
        dest="resolution",
        action="store_const",
        const="reset",
        help="drop our copy of its log and replicate it again from its start",
    )
    resolve.add_argument("--reason", required=True, help="why (kept with the evidence)")


def _token(settings: Settings, given: str | None) -> str:
    token = given or os.environ.get(TOKEN_ENV)
    if token:
        return token
    tokens = Path(settings.data_dir) / "tokens.json"
    if tokens.exists():
        return str(json.loads(tokens.read_text())["coordinator"])
    raise SystemExit(f"timebank peer: give a coordinator token (--token or ${TOKEN_ENV})")


def _fail(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
        message = problem.get("detail") or problem.get("title")
    except ValueError:
        message = response.text[:200]
    raise SystemExit(f"timebank peer: {response.status_code}: {message}")


def run_peer(settings: Settings, args: argparse.Namespace) -> int:
    base = (args.url or f"http://127.0.0.1:{settings.http.port}").rstrip("/") + "/federation/peers"
    if args.action in ("evidence", "resolve"):
        base = base.removesuffix("/peers")
    headers = {"Authorization": f"Bearer {_token(settings, args.token)}"}
    try:
        with httpx.Client(headers=headers, timeout=30) as http:
            return _act(http, base, args)
    except httpx.HTTPError as exc:
        raise SystemExit(f"timebank peer: cannot reach the node at {base}: {exc}") from None


def _act(http: httpx.Client, base: str, args: argparse.Namespace) -> int:
    if args.action == "list":
        response = http.get(base)
        _fail(response)
        peers: list[dict[str, Any]] = response.json()
        if not peers:
            print("no neighbours")
        for peer in peers:
            print(f"{peer['origin']}  (NATS name {peer['name']}, trust limit {peer['trust_limit']} minutes)")
            print(f"  log key:     {peer['log_key']}")
            print(f"  witness key: {peer['witness_key'] or '-'}")
            print(f"  reached at:  {peer['nats_url']} as {peer['nats_user'] or '-'}")
        return 0
    if args.action == "evidence":
        return _evidence(http, base)
    if args.action == "resolve":
        body = {"origin": args.origin, "action": args.resolution, "reason": args.reason}
        response = http.post(f"{base}/evidence/resolutions", json=body)
        _fail(response)
        done = response.json()
        print(f"{done['action']}: evidence {', '.join(map(str, done['evidence']))} against {done['origin']} resolved")
        return 0
    if args.action == "remove":
        _fail(http.delete(f"{base}/{args.origin}"))
        print(f"no longer peering with {args.origin}")
        return 0
    body = {
        "origin": args.origin,
        "log_key": args.log_key,
        "witness_key": args.witness_key,
        "nats_url": args.nats_url,
        "nats_user": args.nats_user,
        "nats_password": args.nats_password,
        "issued_password": args.issued_password,
        "name": args.name,
        "trust_limit": args.trust_limit,
    }
    response = http.post(base, json={k: v for k, v in body.items() if v is not None})
    _fail(response)
    added = response.json()
    credential = added["credential"]
    print(f"peering with {added['peer']['origin']} (trust limit {added['peer']['trust_limit']} minutes)")
    print("Give its coordinators this credential for our NATS server (it is a secret; shown once):")
    print(f"  url:      {credential['nats_url']}")
    print(f"  user:     {credential['user']}")
    print(f"  password: {credential['password']}")
    return 0


def _evidence(http: httpx.Client, base: str) -> int:
    response = http.get(f"{base}/evidence")
    _fail(response)
    kept: list[dict[str, Any]] = response.json()
    if not kept:
        print("no fork evidence")
    for e in kept:
        state = "OPEN" if e["resolution"] is None else f"{e['resolution']} ({e['reason']})"
        print(f"#{e['id']} {e['origin']}: {e['kind']}, {e['detail']} (found {e['detected_at']}): {state}")
    return 0
