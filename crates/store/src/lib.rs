//! Credential-mapping store: accounts, password verifiers, sealed grants.
