//! Token broker: Entra client, access-token cache, single-flight refresh, failure classification.
