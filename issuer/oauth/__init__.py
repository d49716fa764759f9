"""The OAuth 2.0 layer, grouped by the standard each module implements.

* :mod:`.server`   - Authlib's Flask AuthorizationServer, form-body only, errors normalised
* :mod:`.client_auth` - RFC 6749 section 2.3 / RFC 7523 client authentication
* :mod:`.rfc8693`  - the token-exchange grant
* :mod:`.rfc8414`  - authorization server metadata
* :mod:`.capabilities` - RFC 7662 introspection and RFC 7009 revocation of capabilities
"""
