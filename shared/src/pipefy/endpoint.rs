//! Where the token may go. A destination file may set any `endpoint` and `token.oauth_url`,
//! so a mistaken or hostile file could send the token anywhere: only Pipefy's own hosts, the
//! hosts the deployment allows (single-tenant domains), and plain HTTP on loopback (the
//! emulator) are accepted, checked before any request carries the token.

use url::{Host, Url};

/// Pipefy's public hosts (the GraphQL API and the service-account token endpoint).
pub const PIPEFY_HOSTS: &[&str] = &["api.pipefy.com", "app.pipefy.com"];

/// The environment variable holding further allowed hosts, comma-separated.
pub const ALLOWED_HOSTS_VAR: &str = "PIPEFY_SYNC_ALLOWED_HOSTS";

/// Hosts the token may be sent to besides Pipefy's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(hosts: impl IntoIterator<Item = String>) -> Self {
        AllowedHosts(
            hosts
                .into_iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        )
    }

    /// `PIPEFY_SYNC_ALLOWED_HOSTS`, comma-separated.
    pub fn from_env() -> Self {
        let raw = std::env::var(ALLOWED_HOSTS_VAR).unwrap_or_default();
        AllowedHosts::new(raw.split(',').map(str::to_string))
    }

    fn allows(&self, host: &str) -> bool {
        PIPEFY_HOSTS.contains(&host) || self.0.iter().any(|h| h == host)
    }

    /// Checks the URL named by the destination's `what` (`endpoint`, `token.oauth_url`).
    pub fn check(&self, what: &str, url: &str) -> Result<(), String> {
        let parsed = Url::parse(url).map_err(|e| format!("{what} '{url}' is not a URL: {e}"))?;
        let loopback = match parsed.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        let host = parsed
            .host_str()
            .unwrap_or("")
            .trim_end_matches('.')
            .to_ascii_lowercase();
        match parsed.scheme() {
            "http" if loopback => Ok(()),
            "https" if loopback || self.allows(&host) => Ok(()),
            "https" => Err(format!(
                "{what} '{url}': the Pipefy token is only sent to {} or to a host this deployment allows ({ALLOWED_HOSTS_VAR}, the Terraform variable allowed_pipefy_hosts); '{host}' is not one of them",
                PIPEFY_HOSTS.join(", ")
            )),
            "http" => Err(format!(
                "{what} '{url}': plain http carries the token in clear text, and is only accepted on loopback (a local emulator); use https"
            )),
            other => Err(format!("{what} '{url}': scheme '{other}' is not https")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pipefy_allowed_hosts_and_loopback_get_the_token() {
        let none = AllowedHosts::default();
        for ok in [
            "https://api.pipefy.com/graphql",
            "https://APP.pipefy.com/oauth/token",
            "http://127.0.0.1:8080/graphql",
            "http://localhost:1/graphql",
            "http://[::1]:9/graphql",
            "https://127.0.0.1/graphql",
        ] {
            assert_eq!(none.check("endpoint", ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://api.pipefy.com.evil.example/graphql",
            "https://evil.example/graphql",
            "http://api.pipefy.com/graphql",
            "http://10.0.0.5/graphql",
            "ftp://api.pipefy.com/graphql",
            "not a url",
            "https://pipefy.com@evil.example/graphql",
        ] {
            let err = none.check("endpoint", bad).unwrap_err();
            assert!(err.starts_with("endpoint '"), "{err}");
        }
        let tenant = AllowedHosts::new(["Pipefy.Example.com ".to_string(), String::new()]);
        assert_eq!(
            tenant.check("token.oauth_url", "https://pipefy.example.com/oauth/token"),
            Ok(())
        );
        assert!(tenant
            .check("endpoint", "https://other.example.com/graphql")
            .unwrap_err()
            .contains("allowed_pipefy_hosts"));
    }
}
