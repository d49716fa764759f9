"""Administration: the one service layer behind the CLI and the admin REST API.

* :mod:`.service`: every admin operation, validated once, each change recorded;
* :mod:`.changes`: the admin change log (who, what, before, after), tagged like audit rows;
* :mod:`.credentials`: admin keys for the REST API, stored hashed, with roles;
* :mod:`.api`: the ``/admin/v1`` blueprint, a thin HTTP face over the service.
"""
