"""The SAML suite's fixtures: a real pysaml2 IdP process and the keys made for it."""

from __future__ import annotations

from tests.support.saml import saml_idp as saml_idp
from tests.support.saml import saml_keys as saml_keys
from tests.support.saml import saml_sp_keys as saml_sp_keys
