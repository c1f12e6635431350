//! Listeners, TLS, the session driver shared by all protocols, limits, shutdown, metrics and admin HTTP.
