"""The service's URL map: every blueprint of :mod:`qapp.service`, registered in one place.

==============================  ==========================================
URL                             module
==============================  ==========================================
``/health``                     :mod:`qapp.service.health`
``/counter/<strategy>``         :mod:`qapp.service.race` (the race lab)
``/auth/…``                     :mod:`qapp.service.auth`
``/session/counter[/…]``        :mod:`qapp.service.session_counter`
``/cache/<key>``                :mod:`qapp.service.cache`
``/memo/<key>``                 :mod:`qapp.service.memo`
``/lab/…``                      :mod:`qapp.service.lab` (more race lab rows)
``/``                           :mod:`qapp.service.page` (the lab's page)
``/openapi.json``               quart-schema, set up by :mod:`qapp.service.validation`
``/docs``                       :mod:`qapp.service.apiui` (Swagger UI, served locally)
==============================  ==========================================
"""

from __future__ import annotations

from quart import Quart

from qapp.service import apiui, auth, cache, health, lab, memo, page, race, session_counter

__all__ = ["register"]


def register(app: Quart) -> None:
    """Register every blueprint of the service on ``app``."""
    for module in (health, race, auth, session_counter, cache, memo, lab, page, apiui):
        app.register_blueprint(module.bp)
