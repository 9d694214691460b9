"""Identity and authorization: signing keys, mesh JWTs, revocation, the authority that
issues and checks them, and the audit trail."""
