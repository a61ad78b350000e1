"""Identity backends: password hashing, directories, SSO, second factors and token signing."""
