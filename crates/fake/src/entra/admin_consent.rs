//! Admin consent (EXCHANGE.md §4.1): `GET /{tenant}/adminconsent?client_id=…&redirect_uri=…
//! &state=…` (also under `/v2.0/`). A tenant administrator grants the app's permissions for
//! the whole tenant, and Entra redirects back with `admin_consent=True&tenant=…&state=…`, or
//! with `error=access_denied` when the administrator declines. Tests play the administrator
//! with [`FakeEntra::set_admin_declines`] and check [`FakeEntra::admin_consented`].

use super::authorize::{redirect_to, AuthorizeReply};
use super::form::parse_form;
use super::{lock, FakeEntra};

impl FakeEntra {
    /// `GET /{tenant}/adminconsent?…` with the raw query string.
    pub fn admin_consent(&self, tenant: &str, query: &str) -> AuthorizeReply {
        let q = parse_form(query.as_bytes());
        let page = |text: &str| AuthorizeReply::Page {
            status: 400,
            text: text.to_string(),
        };
        if !self.knows_tenant(tenant) {
            return page("AADSTS90002: Tenant not found.");
        }
        let Some(client_id) = q.get("client_id").filter(|c| !c.is_empty()) else {
            return page(
                "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
            );
        };
        if !lock(&self.state.apps).contains_key(client_id) {
            return page(
                "AADSTS700016: Application with identifier was not found in the directory.",
            );
        }
        let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
        if !(redirect_uri.starts_with("https://") || redirect_uri.starts_with("http://")) {
            return page("AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.");
        }
        let state = q.get("state").cloned().unwrap_or_default();
        let mut params: Vec<(&str, &str)> = Vec::new();
        if self.switches().admin_declines {
            params.push(("error", "access_denied"));
            params.push((
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            ));
        } else {
            lock(&self.state.admin_consents).insert(client_id.clone());
            params.push(("admin_consent", "True"));
            params.push(("tenant", &self.state.tenant));
        }
        if !state.is_empty() {
            params.push(("state", &state));
        }
        redirect_to(&redirect_uri, &params)
    }

    /// Makes the administrator decline admin consent from now on (or accept again).
    pub fn set_admin_declines(&self, declines: bool) {
        lock(&self.state.switches).admin_declines = declines;
    }

    /// Whether an administrator has granted admin consent to `client_id`.
    pub fn admin_consented(&self, client_id: &str) -> bool {
        lock(&self.state.admin_consents).contains(client_id)
    }
}

#[cfg(test)]
mod tests {
    use crate::directory::Directory;
    use crate::entra::{AuthorizeReply, FakeEntra};

    fn entra() -> FakeEntra {
        let entra = FakeEntra::new("contoso.onmicrosoft.com", Directory::default());
        entra.register_app("app-1", "secret");
        entra
    }

    #[test]
    fn consent_redirects_with_tenant_and_state() {
        let entra = entra();
        let reply = entra.admin_consent(
            "contoso.onmicrosoft.com",
            "client_id=app-1&redirect_uri=https%3A%2F%2Fexample.com%2Fdone&state=s1",
        );
        assert_eq!(
            reply,
            AuthorizeReply::Redirect(
                "https://example.com/done?admin_consent=True&tenant=contoso.onmicrosoft.com&state=s1"
                    .into()
            )
        );
        assert!(entra.admin_consented("app-1"));
    }

    #[test]
    fn a_declining_admin_and_bad_requests() {
        let entra = entra();
        entra.set_admin_declines(true);
        let AuthorizeReply::Redirect(location) = entra.admin_consent(
            "common",
            "client_id=app-1&redirect_uri=http%3A%2F%2Flocalhost%2F&state=s2",
        ) else {
            panic!("a redirect");
        };
        assert!(location.contains("error=access_denied"), "{location}");
        assert!(location.ends_with("state=s2"), "{location}");
        assert!(!entra.admin_consented("app-1"));
        assert!(matches!(
            entra.admin_consent(
                "common",
                "client_id=unknown&redirect_uri=https%3A%2F%2Fx%2F"
            ),
            AuthorizeReply::Page { .. }
        ));
        assert!(matches!(
            entra.admin_consent("common", "client_id=app-1"),
            AuthorizeReply::Page { .. }
        ));
    }
}
