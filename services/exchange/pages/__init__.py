"""The exchange's web pages for members and coordinators: plain HTML forms that post, then redirect (303) to
the next page, over the same commands and read side as the JSON API. They work without any script.

A refused form (a DomainError) comes back with the problem's detail and its 4xx status; a member page asked for
while signed out redirects to /login. One module per area, as in ``api/``; this one builds their router.
"""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide
from litestar.exceptions import HTTPException

from services.exchange import forms
from services.exchange.forms import SignInNeeded
from services.exchange.pages import access, account, coordinate, exchanges, finding, listings
from services.exchange.pages.errors import error_page, to_sign_in
from shared.errors import DomainError

ROUTER = Router(
    path="/",
    route_handlers=[
        finding.home,
        access.join_form,
        access.apply,
        access.invitation_form,
        access.join,
        access.login_form,
        access.login,
        access.logout,
        account.me_page,
        account.profile,
        account.erase,
        listings.new_listing_form,
        listings.new_listing,
        listings.listing_page,
        listings.propose,
        listings.edit_listing_form,
        listings.edit_listing,
        listings.listing_status,
        exchanges.exchange_page,
        exchanges.exchange_action,
        exchanges.send_form,
        exchanges.send,
        coordinate.coordinate,
        coordinate.decide,
        coordinate.invite,
        coordinate.grant,
    ],
    dependencies={"visit": Provide(forms.open_visit)},
    exception_handlers={SignInNeeded: to_sign_in, DomainError: error_page, HTTPException: error_page},
)
