"""Members and access: applications, invitations, sessions, profiles, approvals, roles and erasure."""

from __future__ import annotations

from typing import Annotated, Literal

import asyncpg
from litestar import Controller, Response, delete, get, patch, post, put
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_204_NO_CONTENT

from services.exchange import auth, store
from services.exchange import commands as cmd
from services.exchange import events as ev
from services.exchange.api.access import (
    CommandsDep,
    GateDep,
    Me,
    PoolDep,
    SecureCookiesDep,
    coordinator,
    expired_cookie,
    session_cookie,
    sign_in,
    sign_out,
    signed_in,
)
from services.exchange.api.schema import (
    Application,
    Created,
    InvitationBody,
    InvitationView,
    JoinBody,
    ProfileBody,
    RoleBody,
    SessionView,
    SignIn,
)
from shared.errors import NotFound
from shared.web import AnyRequest


def member_details(body: Application, password_hash: str) -> ev.MemberDetails:
    return ev.MemberDetails(
        name=body.name.strip(),
        email=body.email.strip(),
        skills=[s.strip() for s in body.skills],
        area=body.area.strip(),
        bio=body.bio,
        password_hash=password_hash,
    )


class MemberController(Controller):
    path = "/api"
    tags = ("members",)

    @post("/applications", operation_id="applyToJoin", status_code=HTTP_201_CREATED)
    async def apply(self, data: JSONBody[Application], commands: CommandsDep) -> Created:
        member = await commands.apply(
            cmd.ApplyToJoin(details=member_details(data, await auth.hash_password(data.password)))
        )
        return Created(id=member, status="pending")

    @post("/invitations", operation_id="invite", status_code=HTTP_201_CREATED)
    async def invite(self, data: JSONBody[InvitationBody], commands: CommandsDep, me: Me) -> InvitationView:
        actor = coordinator(me)
        invitation, token = await commands.invite(actor, cmd.Invite(role=data.role))
        return InvitationView(id=invitation, role=data.role, token=token, link=f"/join/{token}")

    @post("/invitations/join", operation_id="joinByInvitation", status_code=HTTP_201_CREATED)
    async def join(self, data: JSONBody[JoinBody], commands: CommandsDep) -> Created:
        details = member_details(data, await auth.hash_password(data.password))
        member = await commands.join(cmd.JoinByInvitation(token=data.token, details=details))
        return Created(id=member, status="approved")

    @post("/sessions", operation_id="signIn", status_code=HTTP_201_CREATED)
    async def sign_in(
        self,
        request: AnyRequest,
        data: JSONBody[SignIn],
        gate: GateDep,
        pool: PoolDep,
        secure_cookies: SecureCookiesDep,
    ) -> Response[SessionView]:
        token, principal, expires = await sign_in(request, gate, pool, data)
        view = SessionView(
            member=principal.member,
            role=principal.role,
            status=principal.status,
            expires=expires,
            csrf_token=principal.csrf,
            token=token if data.kind == "bearer" else None,
        )
        cookies = []
        if data.kind == "cookie":
            cookies.append(session_cookie(token, expires, secure=secure_cookies))
        return Response(view, status_code=HTTP_201_CREATED, cookies=cookies)

    @delete("/sessions/current", operation_id="signOut", status_code=HTTP_204_NO_CONTENT)
    async def sign_out(self, gate: GateDep, pool: PoolDep, me: Me) -> Response[None]:
        signed_in(me)
        assert me is not None
        await sign_out(gate, pool, me)
        return Response(None, status_code=HTTP_204_NO_CONTENT, cookies=[expired_cookie()])

    @get("/me", operation_id="getMe")
    async def me_view(self, pool: PoolDep, me: Me) -> store.MemberView:
        actor = signed_in(me)
        return await member_view(pool, actor.member)

    @patch("/me", operation_id="updateProfile")
    async def update(
        self, data: JSONBody[ProfileBody], commands: CommandsDep, pool: PoolDep, me: Me
    ) -> store.MemberView:
        actor = signed_in(me)
        update = cmd.UpdateProfile(name=data.name, skills=data.skills, area=data.area, bio=data.bio)
        await commands.update_profile(actor, update)
        return await member_view(pool, actor.member)

    @get("/members", operation_id="listMembers")
    async def members(
        self,
        pool: PoolDep,
        me: Me,
        status: Annotated[
            Literal["pending", "approved", "rejected", "erased"], QueryParameter(required=False)
        ] = "pending",
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> list[store.MemberView]:
        coordinator(me)
        return await members_by_status(pool, status, limit)

    @get("/members/{member_id:str}", operation_id="getMember")
    async def member(self, member_id: FromPath[str], pool: PoolDep, me: Me) -> store.PublicMember | store.MemberView:
        actor = signed_in(me)
        view = await member_view(pool, member_id)
        if actor.member == member_id or actor.role in ("coordinator", "auditor"):
            return view
        if view.status != "approved":
            raise NotFound(f"member {member_id} does not exist")
        return store.PublicMember(id=view.id, name=view.name, skills=view.skills, area=view.area, bio=view.bio)

    @post("/members/{member_id:str}/approval", operation_id="approveMember", status_code=HTTP_200_OK)
    async def approve(self, member_id: FromPath[str], commands: CommandsDep, pool: PoolDep, me: Me) -> store.MemberView:
        await commands.approve(coordinator(me), cmd.ApproveMember(member=member_id))
        return await member_view(pool, member_id)

    @post("/members/{member_id:str}/rejection", operation_id="rejectMember", status_code=HTTP_200_OK)
    async def reject(self, member_id: FromPath[str], commands: CommandsDep, pool: PoolDep, me: Me) -> store.MemberView:
        await commands.reject(coordinator(me), cmd.RejectMember(member=member_id))
        return await member_view(pool, member_id)

    @put("/members/{member_id:str}/role", operation_id="changeRole")
    async def role(
        self, member_id: FromPath[str], data: JSONBody[RoleBody], commands: CommandsDep, pool: PoolDep, me: Me
    ) -> store.MemberView:
        actor = coordinator(me)
        await commands.change_role(actor, cmd.ChangeRole(member=member_id, role=data.role))
        return await member_view(pool, member_id)

    @post("/members/{member_id:str}/erasure", operation_id="eraseMember", status_code=HTTP_200_OK)
    async def erase(self, member_id: FromPath[str], commands: CommandsDep, pool: PoolDep, me: Me) -> store.MemberView:
        await commands.erase(signed_in(me), cmd.EraseMember(member=member_id))
        return await member_view(pool, member_id)


async def member_view(pool: asyncpg.Pool, member_id: str) -> store.MemberView:
    async with pool.acquire() as conn:
        view = await store.member(conn, member_id)
    if view is None:
        raise NotFound(f"member {member_id} does not exist")
    return view


async def members_by_status(pool: asyncpg.Pool, status: str, limit: int) -> list[store.MemberView]:
    async with pool.acquire() as conn:
        return await store.members_by_status(conn, status, limit)
